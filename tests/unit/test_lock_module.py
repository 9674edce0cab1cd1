"""The release role's deploy lock module (roles/release/library/djdeploy_lock.py), on tmp_path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from .loader import load, run_module

lockmod = load("roles/release/library/djdeploy_lock.py")

# 2026-01-01T00:00:00Z and one hour later.
JAN_1 = 1767225600.0
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = JAN_1) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_lock(
    lock_dir: Path,
    *,
    clock: Clock | None = None,
    boot: float | None = JAN_1 - HOUR,
    stale_after: float | None = None,
) -> Any:
    return lockmod.DeployLock(
        lock_dir,
        "demo",
        host="web1",
        clock=clock or Clock(),
        boot_time=lambda: boot,
        stale_after=stale_after,
    )


def owner(token: str, who: str = "alice") -> Any:
    return lockmod.Owner(token=token, who=who, action="release", run="r1")


def write_owner(path: Path, **fields: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(fields) + "\n")


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "run/djdeploy/locks"


def test_acquire_creates_a_private_directory_and_the_owner_file(lock_dir: Path) -> None:
    result = make_lock(lock_dir).acquire(owner("t1"))
    assert not result.failed
    assert result.acquired is True
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    recorded = json.loads((lock_dir / "demo.lock").read_text())
    assert recorded == {
        "who": "alice",
        "since": "2026-01-01T00:00:00Z",
        "action": "release",
        "run": "r1",
        "token": "t1",
    }
    assert result.held is True
    assert result.holder == recorded
    # No temporary file is left next to the lock.
    assert sorted(p.name for p in lock_dir.iterdir()) == ["demo.lock"]


def test_acquire_tightens_an_existing_directory(lock_dir: Path) -> None:
    lock_dir.mkdir(parents=True)
    lock_dir.chmod(0o755)
    make_lock(lock_dir).acquire(owner("t1"))
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700


def test_acquire_refuses_a_directory_that_is_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "locks"
    link.symlink_to(target)
    with pytest.raises(lockmod.LockError, match="not a directory"):
        make_lock(link).acquire(owner("t1"))
    assert not (target / "demo.lock").exists()


def test_another_token_is_refused_with_the_holder_in_the_message(lock_dir: Path) -> None:
    make_lock(lock_dir).acquire(owner("t1"))
    result = make_lock(lock_dir, clock=Clock(JAN_1 + 60)).acquire(owner("t2", who="bob"))
    assert result.failed
    assert result.acquired is False
    assert result.msg == (
        "release: demo on web1 is locked by alice since 2026-01-01T00:00:00Z (release r1). "
        "Wait for that run to end; if it died, break the lock with -e release_break_lock=true."
    )
    assert result.holder["token"] == "t1"
    assert json.loads((lock_dir / "demo.lock").read_text())["who"] == "alice"


def test_the_same_token_takes_the_lock_again(lock_dir: Path) -> None:
    make_lock(lock_dir).acquire(owner("t1"))
    again = make_lock(lock_dir, clock=Clock(JAN_1 + 60)).acquire(owner("t1"))
    assert not again.failed
    assert again.acquired is True
    # The lock keeps its first owner record.
    assert again.holder["since"] == "2026-01-01T00:00:00Z"


def test_acquire_needs_a_token(lock_dir: Path) -> None:
    with pytest.raises(lockmod.LockError, match="token"):
        make_lock(lock_dir).acquire(owner(""))


def test_an_unreadable_lock_still_refuses(lock_dir: Path) -> None:
    lock_dir.mkdir(parents=True, mode=0o700)
    (lock_dir / "demo.lock").write_text("not json")
    result = make_lock(lock_dir, boot=None).acquire(owner("t1"))
    assert result.failed
    assert "locked by an unknown run since an unknown time" in result.msg
    assert result.holder == {}


def test_release_removes_the_lock_of_its_token(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    lock.acquire(owner("t1"))
    result = lock.release("t1")
    assert result.released is True
    assert result.held is False
    assert not (lock_dir / "demo.lock").exists()
    assert list(lock_dir.iterdir()) == []


def test_release_leaves_another_tokens_lock_and_reports_it(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    lock.acquire(owner("t1"))
    for token in ("t2", ""):
        result = lock.release(token)
        assert not result.failed
        assert result.released is False
        assert result.held is True
        assert result.holder["who"] == "alice"
        assert result.holder["token"] == "t1"
    assert (lock_dir / "demo.lock").exists()


def test_force_releases_any_lock(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    lock.acquire(owner("t1"))
    assert lock.release("t2", force=True).released is True
    assert not (lock_dir / "demo.lock").exists()


def test_releasing_an_absent_lock_is_fine(lock_dir: Path) -> None:
    result = make_lock(lock_dir).release("t1")
    assert not result.failed
    assert result.released is False
    assert result.held is False
    assert not lock_dir.exists()


def test_release_puts_back_a_lock_that_changed_hands(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    lock.acquire(owner("t2", who="bob"))
    # As if another run had broken and retaken the lock after this run read it.
    assert lock._take_out("t1") is False
    assert json.loads((lock_dir / "demo.lock").read_text())["token"] == "t2"
    assert sorted(p.name for p in lock_dir.iterdir()) == ["demo.lock"]


def test_break_lock_replaces_another_runs_lock(lock_dir: Path) -> None:
    make_lock(lock_dir).acquire(owner("t1"))
    result = make_lock(lock_dir, clock=Clock(JAN_1 + 60)).acquire(
        owner("t2", who="bob"), break_lock=True
    )
    assert not result.failed
    assert result.acquired is True
    assert result.broken_holder["who"] == "alice"
    assert "after breaking the lock of alice since 2026-01-01T00:00:00Z" in result.msg
    recorded = json.loads((lock_dir / "demo.lock").read_text())
    assert (recorded["who"], recorded["token"]) == ("bob", "t2")


def test_break_lock_keeps_this_runs_own_lock(lock_dir: Path) -> None:
    make_lock(lock_dir).acquire(owner("t1"))
    result = make_lock(lock_dir).acquire(owner("t1"), break_lock=True)
    assert result.acquired is True
    assert result.broken_holder is None or result.broken_holder == {}


def test_a_lock_from_before_the_boot_is_stale_but_not_removed(lock_dir: Path) -> None:
    write_owner(
        lock_dir / "demo.lock",
        who="alice",
        since="2026-01-01T00:00:00Z",
        action="release",
        run="x",
        token="old",
    )
    lock = make_lock(lock_dir, clock=Clock(JAN_1 + 2 * HOUR), boot=JAN_1 + HOUR)
    found = lock.inspect()
    assert found.held and found.stale
    assert "before web1 booted at 2026-01-01T01:00:00Z" in found.stale_reason
    result = lock.acquire(owner("t1"))
    assert result.failed
    assert "locked by alice since 2026-01-01T00:00:00Z" in result.msg
    assert "release_break_lock=true" in result.msg
    assert "The lock looks stale: it was taken before web1 booted" in result.msg
    assert json.loads((lock_dir / "demo.lock").read_text())["token"] == "old"
    # Only break_lock removes it.
    result = lock.acquire(owner("t1"), break_lock=True)
    assert result.acquired is True
    assert result.stale is True
    assert json.loads((lock_dir / "demo.lock").read_text())["token"] == "t1"


def test_a_lock_older_than_stale_after_is_stale(lock_dir: Path) -> None:
    make_lock(lock_dir).acquire(owner("t1"))
    young = make_lock(lock_dir, clock=Clock(JAN_1 + 60), stale_after=HOUR).inspect()
    assert young.held and not young.stale
    old = make_lock(lock_dir, clock=Clock(JAN_1 + 2 * HOUR), stale_after=HOUR).inspect()
    assert old.stale
    assert old.stale_reason == "it is older than 3600 seconds"
    # Without stale_after only the boot time counts.
    assert not make_lock(lock_dir, clock=Clock(JAN_1 + 10 * HOUR)).inspect().stale


def test_the_age_falls_back_to_the_files_time(lock_dir: Path) -> None:
    write_owner(lock_dir / "demo.lock", who="alice", token="old")
    os.utime(lock_dir / "demo.lock", (JAN_1, JAN_1))
    found = make_lock(lock_dir, boot=JAN_1 + 1).inspect()
    assert found.stale


def test_inspect_reports_holder_and_nothing_when_free(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    free = lock.inspect()
    assert (free.held, free.holder, free.stale) == (False, {}, False)
    lock.acquire(owner("t1"))
    held = lock.inspect()
    assert held.held and held.holder["token"] == "t1" and not held.stale


def test_check_mode_changes_nothing_and_says_what_would_happen(lock_dir: Path) -> None:
    lock = make_lock(lock_dir)
    result = lock.acquire(owner("t1"), check_mode=True)
    assert result.acquired is True
    assert "would be taken" in result.msg
    assert not lock_dir.exists()
    lock.acquire(owner("t1"))
    refused = make_lock(lock_dir).acquire(owner("t2"), check_mode=True)
    assert refused.failed and "locked by alice" in refused.msg
    broken = make_lock(lock_dir).acquire(owner("t2"), break_lock=True, check_mode=True)
    assert broken.acquired is True and broken.broken_holder["who"] == "alice"
    released = lock.release("t1", check_mode=True)
    assert released.released is True
    assert json.loads((lock_dir / "demo.lock").read_text())["token"] == "t1"


def test_invalid_app_names_are_refused(lock_dir: Path) -> None:
    for app in ("", "../etc", "a/b", ".hidden"):
        with pytest.raises(lockmod.LockError, match="invalid app name"):
            lockmod.DeployLock(lock_dir, app)


def test_read_boot_time(tmp_path: Path) -> None:
    proc_stat = tmp_path / "stat"
    proc_stat.write_text("cpu  1 2 3\nbtime 1767225600\nprocesses 5\n")
    assert lockmod.read_boot_time(proc_stat) == JAN_1
    proc_stat.write_text("cpu  1 2 3\n")
    assert lockmod.read_boot_time(proc_stat) is None
    assert lockmod.read_boot_time(tmp_path / "missing") is None


def test_run_dispatches_the_states(lock_dir: Path) -> None:
    base = {"app": "demo", "lock_dir": str(lock_dir), "host": "web1"}
    taken = lockmod.run({**base, "state": "acquired", "token": "t1", "who": "alice"}, False)
    assert taken.as_dict()["acquired"] is True
    seen = lockmod.run({**base, "state": "inspected"}, False).as_dict()
    assert seen["held"] is True and seen["holder"]["who"] == "alice"
    assert "acquired" not in seen and "released" not in seen
    gone = lockmod.run({**base, "state": "released", "token": "t1"}, False).as_dict()
    assert gone["released"] is True and gone["lock_path"] == str(lock_dir / "demo.lock")


def _module(tmp_path: Path, **args: object) -> tuple[int, dict[str, Any]]:
    """Run the module file as Ansible would (arguments in a JSON file), without Ansible."""
    rc, result, _output = run_module("roles/release/library/djdeploy_lock.py", args, tmp_path)
    return rc, result


def test_the_module_reports_no_change_and_fails_on_a_held_lock(
    tmp_path: Path, lock_dir: Path
) -> None:
    base = {"app": "demo", "lock_dir": str(lock_dir), "host": "web1", "state": "acquired"}
    rc, result = _module(tmp_path, **base, token="t1", who="alice", action="release", run="r1")
    assert rc == 0, result
    assert result["changed"] is False and result["acquired"] is True
    rc, result = _module(tmp_path, **base, token="t2")
    assert rc != 0
    assert result["failed"] is True and result["changed"] is False
    assert "locked by alice since" in result["msg"]
    assert "release_break_lock=true" in result["msg"]
    rc, result = _module(tmp_path, app="demo", lock_dir=str(lock_dir), state="released", token="t1")
    assert rc == 0 and result["released"] is True and result["changed"] is False
    rc, result = _module(tmp_path, app="demo", lock_dir=str(lock_dir), state="acquired")
    assert rc != 0 and "token" in result["msg"]


def test_take_for_run_raises_with_the_holder_and_warns_when_breaking(lock_dir: Path) -> None:
    lib = load("roles/release/module_utils/djdeploy_lock_lib.py")
    lock = lib.DeployLock(lock_dir, "demo", host="web1")
    lib.take_for_run(lock, lib.Owner(token="t1", who="alice"))
    with pytest.raises(lib.LockRefusedError) as refused:
        lib.take_for_run(lock, lib.Owner(token="t2"))
    assert refused.value.result.holder["who"] == "alice"
    assert "locked by alice since" in str(refused.value)
    taken, warnings = lib.take_for_run(lock, lib.Owner(token="t2"), break_lock=True)
    assert taken.acquired and warnings == [f"release: web1: {taken.msg}"]
    assert "after breaking the lock of alice" in warnings[0]
