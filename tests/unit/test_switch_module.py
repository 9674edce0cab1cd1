"""The blue/green switch module (roles/release/library/djdeploy_switch.py) against a fake host.

The host is a temporary directory (releases, colors, links, the upstream file) and a fake
command runner that plays systemctl, nginx, curl, journalctl and pgrep.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from .loader import load, run_module

sw = load("roles/release/library/djdeploy_switch.py")

OLD = "20260101T000000Z-aaaaaaaa"
NEW = "20260102T000000Z-bbbbbbbb"
CHECK = ["curl", "--write-out", "%{http_code}", "https://demo.example.com/healthz"]


class FakeHost:
    """Plays the host's commands; each knob makes one thing fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.start_fails: str = ""
        self.socket_statuses: list[int | None] = [200]
        self.public_outputs: list[str] = ["200"]
        self.nginx_t_rc = 0
        # Looks at /proc after the reload that still see the old worker (100): from the reload
        # on, /proc/100 is an nginx worker until the drain has slept that many times.
        self.draining = 0
        self.reloaded = False
        self.stop_rc = 0
        self.sleeps: list[float] = []
        self.now = 0.0
        self.upstream_at_reload: list[str] = []
        self.upstream_file: Path | None = None
        # The old color's main PID (systemctl show) and a fake /proc; renice calls made.
        self.main_pid = "4242"
        self.proc = Path("/nonexistent/proc")
        self.reniced: list[tuple[int, int]] = []
        self.renice_denied: set[int] = set()
        # Units started and not stopped since (systemctl is-active).
        self.active: set[str] = set()

    def renice(self, pid: int, niceness: int) -> None:
        if pid == 9999:
            raise ProcessLookupError("gone")
        if pid in self.renice_denied:
            raise PermissionError("no CAP_SYS_NICE")
        self.reniced.append((pid, niceness))

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        self.now += 0.01
        if argv[:2] == ["systemctl", "start"] and self.start_fails and self.start_fails in argv[2]:
            return 1, "", "Job failed"
        if argv[:2] == ["systemctl", "start"]:
            self.active.update(argv[2:])
        if argv[:2] == ["systemctl", "stop"]:
            self.active.difference_update(argv[2:])
        if argv[:2] == ["systemctl", "is-active"] and not argv[2].startswith("-"):
            return (0, "active\n", "") if argv[2] in self.active else (3, "inactive\n", "")
        if argv[:2] == ["systemctl", "stop"] and "green" not in " ".join(argv[2:]):
            return self.stop_rc, "", "boom" if self.stop_rc else ""
        if argv == ["nginx", "-s", "reload"]:
            self.reloaded = True
            if self.draining > 0:
                (self.proc / "100").mkdir(parents=True, exist_ok=True)
                (self.proc / "100" / "cmdline").write_bytes(b"nginx: worker process\0")
            if self.upstream_file is not None:
                self.upstream_at_reload.append(self.upstream_file.read_text())
        if argv[:2] == ["nginx", "-t"]:
            return self.nginx_t_rc, "", "nginx: [emerg] bad" if self.nginx_t_rc else ""
        if argv[0] == "curl":
            out = (
                self.public_outputs.pop(0)
                if len(self.public_outputs) > 1
                else self.public_outputs[0]
            )
            return 0, out, ""
        if argv[:2] == ["systemctl", "show"]:
            return 0, f"{self.main_pid}\n", ""
        if argv[0] == "journalctl":
            return 0, "line 1\nTraceback: boom\n", ""
        if argv[0] == "pgrep":
            return 0, ("200\n" if self.reloaded else "100\n"), ""
        return 0, "", ""

    def http_get(self, socket_path: str, path: str, headers: dict[str, str], timeout: float) -> int:
        self.calls.append(["GET", socket_path, path, headers["Host"]])
        status = (
            self.socket_statuses.pop(0)
            if len(self.socket_statuses) > 1
            else self.socket_statuses[0]
        )
        if status is None:
            raise ConnectionRefusedError("refused")
        return status

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.draining > 0:
            self.draining -= 1
            if self.draining == 0:
                (self.proc / "100" / "cmdline").unlink()
                (self.proc / "100").rmdir()

    def clock(self) -> float:
        return self.now

    def commands(self, prefix: list[str]) -> list[list[str]]:
        return [c for c in self.calls if c[: len(prefix)] == prefix]


def make_app_root(tmp_path: Path, old: str = OLD, new: str = NEW) -> Path:
    """An app tree with releases old and new, old live on blue."""
    root = tmp_path / "srv/demo"
    for release in (old, new):
        (root / "releases" / release).mkdir(parents=True)
    (root / "colors").mkdir()
    (root / "colors/blue").symlink_to(root / "releases" / old)
    (root / "current").symlink_to(root / "releases" / old)
    (root / "live-color").write_text("blue\n")
    return root


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    return make_app_root(tmp_path)


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    path = tmp_path / "etc/nginx/djdeploy/demo/upstream.conf"
    path.parent.mkdir(parents=True)
    path.write_text(sw.upstream_text("demo_app", "/run/demo/gunicorn-blue.sock", "blue", "demo"))
    return path


def make(app_root: Path, upstream: Path, host: FakeHost, **overrides: Any) -> Any:
    host.upstream_file = upstream
    remove = overrides.pop("remove", None)
    staged = overrides.pop("staged", None)
    cfg = sw.Config(
        app="demo",
        app_root=app_root,
        release=overrides.pop("release", NEW),
        socket_dir=Path("/run/demo"),
        upstream_file=upstream,
        upstream_name="demo_app",
        health_host="demo.example.com",
        check_argv=CHECK,
        retries=overrides.pop("retries", 3),
        delay=1.0,
        drain_timeout=overrides.pop("drain_timeout", 5.0),
        host="web1",
        **overrides,
    )
    return sw.Switch(
        cfg,
        run=host.run,
        http_get=host.http_get,
        sleep=host.sleep,
        clock=host.clock,
        chown=lambda path, user, group: None,
        remove=remove,
        renice=host.renice,
        proc=host.proc,
        staged=staged,
    )


def target(link: Path) -> str:
    return link.readlink().name


def test_switch_moves_traffic_to_the_idle_color_and_retires_the_old(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    report = make(app_root, upstream, host).execute()

    assert (report.live_color, report.old_color, report.previous_release) == ("green", "blue", OLD)
    assert report.changed
    assert target(app_root / "colors/green") == NEW
    assert target(app_root / "current") == NEW
    assert target(app_root / "previous") == OLD
    assert (app_root / "live-color").read_text() == "green\n"
    assert "unix:/run/demo/gunicorn-green.sock" in upstream.read_text()
    assert "upstream demo_app {" in upstream.read_text()
    # The order that keeps requests flowing: start, check on the socket, move nginx, check
    # through nginx, only then stop the old color.
    starts = host.commands(["systemctl", "start"])
    assert [c[2] for c in starts] == ["demo@green.socket", "demo@green.service"]
    order = [" ".join(c) for c in host.calls]
    first = {
        name: next(i for i, c in enumerate(order) if c.startswith(name))
        for name in (
            "systemctl start demo@green.service",
            "GET /run/demo/gunicorn-green.sock",
            "nginx -t",
            "pgrep",
            "nginx -s reload",
            "curl",
            "systemctl enable --no-reload demo@green.socket",
            "systemctl stop --no-block demo@blue.service demo@blue.socket",
            "systemctl disable --no-reload demo@blue.socket",
        )
    }
    assert list(first.values()) == sorted(first.values())
    assert [s["step"] for s in report.steps] == [
        "prepare",
        "start",
        "health",
        "upstream",
        "public",
        "commit",
        "drain",
        "retire",
    ]
    assert report.seconds >= sum(s["seconds"] for s in report.steps) - 0.001


def test_the_idle_color_is_blue_when_green_serves(app_root: Path, upstream: Path) -> None:
    (app_root / "live-color").write_text("green\n")
    host = FakeHost()
    report = make(app_root, upstream, host).execute()
    assert (report.live_color, report.old_color) == ("blue", "green")
    assert "gunicorn-blue.sock" in upstream.read_text()


def test_first_release_has_no_old_color_to_retire(app_root: Path, upstream: Path) -> None:
    (app_root / "live-color").unlink()
    (app_root / "current").unlink()
    host = FakeHost()
    report = make(app_root, upstream, host).execute()
    assert (report.live_color, report.old_color, report.previous_release) == ("blue", "", "")
    assert not (app_root / "previous").exists()
    # Only the look at nginx's workers before the reload: nothing to drain.
    assert len(host.commands(["pgrep"])) == 1
    assert [s["step"] for s in report.steps][-1] == "commit"


def test_same_release_switch_restarts_on_the_other_color(app_root: Path, upstream: Path) -> None:
    """A config change re-serves the live release on the idle color; previous stays as is."""
    host = FakeHost()
    report = make(app_root, upstream, host, release=OLD).execute()
    assert report.live_color == "green"
    assert target(app_root / "current") == OLD
    assert not (app_root / "previous").exists()


def test_a_release_that_does_not_boot_is_stopped_and_traffic_stays(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.start_fails = "demo@green.service"
    switch = make(app_root, upstream, host)
    with pytest.raises(sw.SwitchError) as failed:
        switch.execute()
    msg = failed.value.msg
    assert f"release: {NEW} did not start or answer /healthz with 200 on web1" in msg
    assert f"traffic stays on the live release {OLD}" in msg
    assert "Traceback: boom" in msg and failed.value.log
    assert upstream.read_text() == before
    assert target(app_root / "current") == OLD
    assert (app_root / "live-color").read_text() == "blue\n"
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])
    assert not host.commands(["nginx", "-s", "reload"])
    assert not host.commands(["systemctl", "stop", "demo@blue.service"])


def test_health_is_retried_then_gives_up(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    host.socket_statuses = [None, 500, 503]
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host, retries=3).execute()
    assert "(last: status 503)" in failed.value.msg
    assert len(host.commands(["GET"])) == 3
    assert host.sleeps == [1.0, 1.0]


def test_health_succeeds_after_a_refused_connection(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    host.socket_statuses = [None, 200]
    report = make(app_root, upstream, host).execute()
    assert report.live_color == "green"


def test_nginx_refusing_the_upstream_restores_it(app_root: Path, upstream: Path) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.nginx_t_rc = 1
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    assert "nginx refused the upstream" in failed.value.msg and "[emerg] bad" in failed.value.msg
    assert upstream.read_text() == before
    assert host.upstream_at_reload == [before]
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])
    assert target(app_root / "current") == OLD


def test_failing_through_nginx_points_nginx_back_and_stops_the_new(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.public_outputs = ["502"]
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    msg = failed.value.msg
    assert f"{NEW} answered on its socket but not through nginx on web1 (last: 502)" in msg
    assert "nginx points at the live release again" in msg
    assert upstream.read_text() == before
    # nginx was reloaded twice: onto the new color, then back onto the live one.
    assert len(host.upstream_at_reload) == 2 and host.upstream_at_reload[-1] == before
    assert "gunicorn-green.sock" in host.upstream_at_reload[0]
    assert (app_root / "live-color").read_text() == "blue\n"
    assert not host.commands(["systemctl", "stop", "demo@blue.service"])
    assert len(host.commands(["curl"])) == 3


def test_a_missing_release_changes_nothing(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host, release="nope").execute()
    assert "does not exist" in failed.value.msg
    assert host.calls == []


def test_an_io_error_of_our_own_reverts(app_root: Path, upstream: Path) -> None:
    (app_root / "colors/blue").unlink()
    (app_root / "colors").rmdir()
    (app_root / "colors").write_text("not a directory")
    host = FakeHost()
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    assert "traffic stays on the live release" in failed.value.msg
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])


def test_drain_waits_for_old_workers_but_is_bounded(
    app_root: Path, upstream: Path, tmp_path: Path
) -> None:
    host = FakeHost()
    host.proc = tmp_path / "proc"
    host.draining = 3
    make(app_root, upstream, host).execute()
    # pgrep lists the workers before the reload; the drain then reads /proc.
    assert len(host.commands(["pgrep"])) == 1
    # Asleep until nginx tells its old workers to finish (OLD_WORKERS_TOLD_AFTER after the
    # reload: the switch's later steps took some of it), then short pauses, doubling.
    assert 0 < host.sleeps[0] < sw.OLD_WORKERS_TOLD_AFTER
    assert host.sleeps[1:] == [sw.DRAIN_FIRST_PAUSE * 2**i for i in range(2)]
    assert not (host.proc / "100").exists()

    host = FakeHost()
    host.proc = tmp_path / "proc2"
    host.draining = 10_000
    (app_root / "live-color").write_text("blue\n")
    report = make(app_root, upstream, host, drain_timeout=2.0).execute()
    drain = next(s for s in report.steps if s["step"] == "drain")
    assert 2.0 <= drain["seconds"] < 2.1

    # drain_timeout 0: one look at the old workers, no pause at all.
    host = FakeHost()
    host.proc = tmp_path / "proc3"
    host.draining = 10_000
    (app_root / "live-color").write_text("green\n")
    report = make(app_root, upstream, host, drain_timeout=0.0).execute()
    assert host.sleeps == []
    drain = next(s for s in report.steps if s["step"] == "drain")
    assert drain["seconds"] < 0.01


def test_failing_to_stop_the_old_color_says_the_release_is_live(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    host.stop_rc = 1
    switch = make(app_root, upstream, host)
    with pytest.raises(sw.SwitchError) as failed:
        switch.execute()
    assert f"{NEW} is live on web1, but stopping the old color blue failed" in failed.value.msg
    assert switch.report.live_color == "green"
    assert target(app_root / "current") == NEW


def test_check_mode_plans_without_touching_the_host(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    plan = make(app_root, upstream, host).plan()
    assert plan["live_color"] == "green" and plan["old_color"] == "blue" and plan["changed"]
    assert host.calls == []
    assert target(app_root / "current") == OLD


def test_upstream_text_names_one_server() -> None:
    text = sw.upstream_text("shop_app", "/run/shop/gunicorn-green.sock", "green", "shop")
    assert text.count("server ") == 1
    assert "upstream shop_app {" in text and "fail_timeout=0" in text


# -- prune: the last step after a committed switch ------------------------------------------

IDS = [f"2025120{d}T000000Z-{c * 8}" for d, c in zip(range(1, 8), "cdefghi", strict=True)]


def release_tree(root: Path, ids: list[str], venv_of: dict[str, str]) -> None:
    """Releases with their static dirs and venv links, plus the venvs they use."""
    for release in ids:
        (root / "releases" / release).mkdir(parents=True, exist_ok=True)
        (root / "static" / release).mkdir(parents=True, exist_ok=True)
        venv = root / "venvs" / venv_of[release]
        venv.mkdir(parents=True, exist_ok=True)
        (root / "releases" / release / ".djdeploy-venv").symlink_to(venv)


def test_prune_keeps_the_newest_and_removes_unused_venvs(app_root: Path, upstream: Path) -> None:
    # OLD serves, NEW is the newest; five older releases on two older venvs.
    older = IDS[:5]
    venv_of = dict.fromkeys(older[:4], "v-old") | {older[4]: "v-mid", OLD: "v-live", NEW: "v-live"}
    release_tree(app_root, [*older, OLD, NEW], venv_of)
    (app_root / "venvs/.partial").mkdir()
    (app_root / "releases/.tmp-build").mkdir()
    host = FakeHost()
    report = make(app_root, upstream, host, keep=3).execute()

    kept = sorted(p.name for p in (app_root / "releases").iterdir())
    assert kept == sorted([".tmp-build", older[4], OLD, NEW])
    assert report.pruned["releases"] == older[:4][::-1]
    for release in older[:4]:
        assert not (app_root / "static" / release).exists()
    assert (app_root / "static" / older[4]).is_dir()
    # v-old is used by no kept release, v-mid by older[4]; dot names are never touched.
    assert report.pruned["venvs"] == ["v-old"]
    assert sorted(p.name for p in (app_root / "venvs").iterdir()) == [".partial", "v-live", "v-mid"]
    assert [s["step"] for s in report.steps][-2:] == ["retire", "prune"]
    assert report.warnings == []


def test_prune_never_removes_the_target_the_previous_or_next(
    app_root: Path, upstream: Path
) -> None:
    """A rollback far back keeps its target and the release it leaves, both beyond keep."""
    release_tree(app_root, [*IDS[:5], OLD, NEW], dict.fromkeys([*IDS[:5], OLD, NEW], "v"))
    (app_root / "current").unlink()
    (app_root / "current").symlink_to(app_root / "releases" / IDS[1])
    (app_root / "next").symlink_to(app_root / "releases" / IDS[3])
    host = FakeHost()
    report = make(app_root, upstream, host, keep=2, release=IDS[0]).execute()
    # NEW and OLD are the newest two; IDS[0] is the target, IDS[1] served before it, IDS[3] is
    # what next points at (nginx serves its static files): only IDS[2] and IDS[4] go.
    assert report.pruned["releases"] == [IDS[4], IDS[2]]
    assert target(app_root / "current") == IDS[0]
    assert target(app_root / "previous") == IDS[1]
    assert {IDS[0], IDS[1], IDS[3], OLD, NEW} <= {p.name for p in (app_root / "releases").iterdir()}


def test_prune_failure_is_a_warning_and_the_switch_stays(app_root: Path, upstream: Path) -> None:
    older = IDS[:3]
    release_tree(app_root, [*older, OLD, NEW], dict.fromkeys([*older, OLD, NEW], "v"))

    def refuse(path: Path) -> None:
        if path.name == older[0]:
            raise PermissionError(13, "Permission denied", str(path))
        sw.remove_path(path)

    host = FakeHost()
    report = make(app_root, upstream, host, keep=2, remove=refuse).execute()
    assert report.changed and target(app_root / "current") == NEW
    assert report.pruned["releases"] == [older[2], older[1]]
    assert (app_root / "releases" / older[0]).is_dir()
    assert len(report.warnings) == 1
    assert f"release: {NEW} is live on web1, but pruning:" in report.warnings[0]
    assert f"removing the old release {older[0]} failed" in report.warnings[0]


def test_prune_keeps_venvs_when_the_live_release_links_none(app_root: Path, upstream: Path) -> None:
    older = IDS[:3]
    release_tree(app_root, [*older, OLD], dict.fromkeys([*older, OLD], "v-old"))
    (app_root / "venvs/v-live").mkdir()
    host = FakeHost()
    report = make(app_root, upstream, host, keep=2, venv_link=".wrong-name").execute()
    assert report.pruned["releases"] == older[::-1]
    assert report.pruned["venvs"] == []
    assert (app_root / "venvs/v-live").is_dir()
    assert any("venvs were not pruned" in w for w in report.warnings)


def test_no_prune_when_the_switch_fails(app_root: Path, upstream: Path) -> None:
    older = IDS[:3]
    release_tree(app_root, [*older, OLD, NEW], dict.fromkeys([*older, OLD, NEW], "v"))
    host = FakeHost()
    host.public_outputs = ["502"]
    with pytest.raises(sw.SwitchError):
        make(app_root, upstream, host, keep=2).execute()
    assert all((app_root / "releases" / r).is_dir() for r in older)


def test_check_mode_reports_what_prune_would_remove(app_root: Path, upstream: Path) -> None:
    older = IDS[:3]
    release_tree(app_root, [*older, OLD, NEW], dict.fromkeys(older, "v-old") | {OLD: "v", NEW: "v"})
    host = FakeHost()
    plan = make(app_root, upstream, host, keep=2).plan()
    assert sorted(plan["pruned"]["releases"]) == sorted(older)
    assert plan["pruned"]["venvs"] == ["v-old"]
    assert all((app_root / "releases" / r).is_dir() for r in older)
    assert (app_root / "venvs/v-old").is_dir()


# -- state=live: nothing to switch, keep the live color running -------------------------------


def test_keep_live_starts_and_enables_only_what_is_not(app_root: Path) -> None:
    host = FakeHost()
    result = sw.keep_live("demo", app_root, "web1", run=host.run)
    # FakeHost answers 0 to every systemctl query: already active and enabled.
    assert result == {
        "live_color": "blue",
        "unit": "demo@blue.socket",
        "actions": [],
        "changed": False,
    }
    assert host.commands(["systemctl", "is-active", "--quiet", "demo@blue.socket"])

    calls: list[list[str]] = []

    def stopped(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return (3, "", "") if argv[1].startswith("is-") else (0, "", "")

    result = sw.keep_live("demo", app_root, "web1", run=stopped)
    assert result["actions"] == ["start", "enable"] and result["changed"]
    assert ["systemctl", "start", "demo@blue.socket"] in calls
    assert ["systemctl", "enable", "demo@blue.socket"] in calls

    calls.clear()
    result = sw.keep_live("demo", app_root, "web1", run=stopped, check_mode=True)
    assert result["changed"] and all(c[1].startswith("is-") for c in calls)


def test_keep_live_without_a_live_color_fails_clearly(app_root: Path) -> None:
    (app_root / "live-color").unlink()
    with pytest.raises(sw.SwitchError) as failed:
        sw.keep_live("demo", app_root, "web1", run=FakeHost().run)
    assert "names no live color on web1" in failed.value.msg


def test_prune_stopping_midway_keeps_what_it_did_and_warns(app_root: Path, upstream: Path) -> None:
    older = IDS[:3]
    release_tree(app_root, [*older, OLD, NEW], dict.fromkeys([*older, OLD, NEW], "v"))

    def crash(path: Path) -> None:
        if path.name == older[1]:
            raise RuntimeError("unexpected")
        sw.remove_path(path)

    host = FakeHost()
    report = make(app_root, upstream, host, keep=2, remove=crash).execute()
    assert report.changed and target(app_root / "current") == NEW
    assert report.pruned["releases"] == [older[2]]
    assert report.warnings == [
        f"release: {NEW} is live on web1, but pruning: it stopped: unexpected"
    ]
    assert report.steps[-1]["step"] == "prune"


def test_socket_paths_follow_the_layouts_socket_name() -> None:
    cfg = sw.Config(
        app="demo",
        app_root=Path("/srv/demo"),
        release=NEW,
        socket_dir=Path("/run/demo"),
        upstream_file=Path("/etc/nginx/djdeploy/demo/upstream.conf"),
        upstream_name="demo_app",
        health_host="demo.example.com",
        check_argv=CHECK,
        socket_name="web-{color}.sock",
    )
    assert cfg.socket("green") == "/run/demo/web-green.sock"
    assert sw.Config(**{**cfg.__dict__, "socket_name": "gunicorn-{color}.sock"}).socket("blue") == (
        "/run/demo/gunicorn-blue.sock"
    )


# The run's deploy lock around the switch -------------------------------------------------


def _lock_option(lock_dir: Path, token: str) -> dict[str, Any]:
    return {
        "app": "demo",
        "token": token,
        "who": "bob",
        "action": "rollback",
        "run": "previous",
        "host": "web1",
        "break_lock": False,
        "lock_dir": str(lock_dir),
    }


def test_the_run_lock_is_taken_then_given_back(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    held = sw.RunLock(_lock_option(locks, "t1"))
    held.take()
    assert held.report["acquired"] is True and (locks / "demo.lock").exists()
    # Taken again by the same run (a release's layout call took it): kept, not refused.
    again = sw.RunLock(_lock_option(locks, "t1"))
    again.take()
    assert again.give_back() is None
    assert again.report["released"] is True and not (locks / "demo.lock").exists()


def test_another_runs_lock_refuses_the_switch_and_is_left(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    sw.RunLock(_lock_option(locks, "theirs")).take()
    mine = sw.RunLock(_lock_option(locks, "mine"))
    with pytest.raises(sw.SwitchError, match="demo on web1 is locked by bob since"):
        mine.take()
    # Giving back a lock this run does not hold leaves it and says so.
    warning = mine.give_back()
    assert warning is not None and "another run" in warning
    assert (locks / "demo.lock").exists()
    # Breaking it (a run that died) takes it, with a warning naming whose lock it was.
    breaker = sw.RunLock({**_lock_option(locks, "mine"), "break_lock": True})
    breaker.take()
    assert breaker.report["holder"]["token"] == "mine"
    assert any("after breaking the lock of bob" in w for w in breaker.warnings)


#: /proc/<pid>/cgroup of the old (blue) color's processes.
OLD_CGROUP = "0::/system.slice/system-demo.slice/demo@blue.service\n"


def host_with_proc(tmp_path: Path, cgroups: dict[str, str]) -> FakeHost:
    """A FakeHost whose /proc holds these entries (name: cgroup file)."""
    host = FakeHost()
    host.proc = tmp_path / "proc"
    for pid, cgroup in cgroups.items():
        (host.proc / pid).mkdir(parents=True)
        (host.proc / pid / "cgroup").write_text(cgroup)
    return host


def test_the_old_colors_processes_are_reniced_before_they_stop(
    app_root: Path, upstream: Path, tmp_path: Path
) -> None:
    host = host_with_proc(
        tmp_path,
        {
            "4242": OLD_CGROUP,  # the master
            "4243": OLD_CGROUP,  # a worker
            "9999": OLD_CGROUP,  # a worker that exits meanwhile
            "5000": "0::/system.slice/system-demo.slice/demo@green.service\n",  # the live color
            "self": OLD_CGROUP,  # not a PID
        },
    )
    make(app_root, upstream, host).execute()
    assert host.reniced == [(4242, 19), (4243, 19)]
    order = [" ".join(c) for c in host.calls]
    show = order.index("systemctl show --property=MainPID --value demo@blue.service")
    assert show < order.index("systemctl stop --no-block demo@blue.service demo@blue.socket")
    # A color that runs nothing (MainPID 0) is left alone.
    host2 = FakeHost()
    host2.main_pid = "0"
    make(app_root, upstream, host2).execute()
    assert host2.reniced == []


def test_processes_root_may_not_renice_are_reniced_by_their_owner(
    app_root: Path, upstream: Path, tmp_path: Path
) -> None:
    # A container's root has no CAP_SYS_NICE: setpriority on the app user's processes fails
    # with EPERM, and the app user lowers their priority itself.
    host = host_with_proc(tmp_path, dict.fromkeys(("4242", "4243", "4244"), OLD_CGROUP))
    host.renice_denied = {4243, 4244}
    make(app_root, upstream, host).execute()
    assert host.reniced == [(4242, 19)]
    me = pwd.getpwuid(os.getuid()).pw_name  # owns the fake /proc entries
    order = [" ".join(c) for c in host.calls]
    renice = order.index(f"runuser -u {me} -- renice -n 19 4243 4244")
    assert renice < order.index("systemctl stop --no-block demo@blue.service demo@blue.socket")


def test_a_rollback_resolves_its_target_or_refuses_before_anything(app_root: Path) -> None:
    # OLD is the previous release of the fixture tree (current -> OLD is live: no previous).
    (app_root / "releases" / OLD / ".djdeploy-release.json").write_text(json.dumps({"id": OLD}))
    option = {
        "to": "",
        "record": ".djdeploy-release.json",
        "failed_marker": ".djdeploy-failed.json",
        "migrations_file": ".djdeploy-migrations.json",
        "allow_migrations": False,
        "manage": "/usr/local/bin/demo-manage",
        "runtime_user": "demo",
    }
    with pytest.raises(sw.SwitchError, match="no previous release is recorded"):
        sw.resolve_rollback(app_root, "web1", option)
    release, read = sw.resolve_rollback(app_root, "web1", {**option, "to": NEW})
    assert release == NEW and read["live"]["id"] == OLD and read["target"]["exists"]
    with pytest.raises(sw.SwitchError, match="is already live on web1"):
        sw.resolve_rollback(app_root, "web1", {**option, "to": OLD})


def test_the_module_takes_web_false_without_the_web_options(tmp_path: Path) -> None:
    """A worker-only host's call (web=false) needs no socket, upstream or check options; a web
    host's call still does (checked before anything is read or changed)."""
    root = make_app_root(tmp_path)
    (root / "live-color").unlink()
    base = {"app": "demo", "app_root": str(root), "release": NEW, "_ansible_check_mode": True}
    rc, result, output = run_module(
        "roles/release/library/djdeploy_switch.py", {**base, "web": False}, tmp_path
    )
    assert rc == 0, output
    assert (result["web"], result["live_color"], result["previous_release"]) == (False, "", OLD)
    rc, result, output = run_module("roles/release/library/djdeploy_switch.py", base, tmp_path)
    assert rc != 0, output
    assert result["msg"] == (
        "state is switched but all of the following are missing: socket_dir, upstream_file,"
        " upstream_name, health_host, check_argv"
    )


# Preboot: a rolling release stages every host, then switches them one by one ----------------


def test_stage_starts_the_idle_color_and_touches_nothing_else(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    report = make(app_root, upstream, host).stage()
    assert report.changed and report.new_color == "green"
    assert [s["step"] for s in report.steps] == ["prepare", "start", "health"]
    assert target(app_root / "colors/green") == NEW
    assert "demo@green.service" in host.active
    # nginx, the live color and its links are not touched.
    assert upstream.read_text() == before
    assert not host.commands(["nginx"]) and not host.commands(["nginx", "-s", "reload"])
    assert not host.commands(["curl"])
    assert target(app_root / "current") == OLD
    assert (app_root / "live-color").read_text() == "blue\n"
    assert not host.commands(["systemctl", "stop", "demo@blue.service"])


def test_a_staged_color_is_checked_again_not_started_again(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    staged = make(app_root, upstream, host).stage().as_dict()
    starts = len(host.commands(["systemctl", "start"]))
    report = make(app_root, upstream, host, staged=staged).execute()
    assert len(host.commands(["systemctl", "start"])) == starts
    assert [s["step"] for s in report.steps] == [
        "prepare",
        "start",
        "health",
        "recheck",
        "upstream",
        "public",
        "commit",
        "drain",
        "retire",
    ]
    assert report.live_color == "green" and target(app_root / "current") == NEW
    assert "gunicorn-green.sock" in upstream.read_text()
    assert not report.warnings
    # The host work counts the staged steps too.
    assert report.seconds >= sum(s["seconds"] for s in report.steps) - 0.001


def test_a_staged_color_that_stopped_is_started_again_with_a_warning(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    staged = make(app_root, upstream, host).stage().as_dict()
    host.active.clear()  # it died (or was stopped) since
    report = make(app_root, upstream, host, staged=staged).execute()
    assert [c[2] for c in host.commands(["systemctl", "start"])][-2:] == [
        "demo@green.socket",
        "demo@green.service",
    ]
    assert "recheck" not in [s["step"] for s in report.steps]
    assert any("was not running on web1; it was started again" in w for w in report.warnings)
    assert target(app_root / "current") == NEW


def test_a_stage_of_another_release_is_not_taken_over(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    staged = make(app_root, upstream, host).stage().as_dict()
    report = make(app_root, upstream, host, staged={**staged, "release": OLD}).execute()
    assert "recheck" not in [s["step"] for s in report.steps]
    assert report.warnings


def test_a_staged_color_that_fails_its_recheck_is_stopped_and_traffic_stays(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    staged = make(app_root, upstream, host).stage().as_dict()
    host.socket_statuses = [500]
    with pytest.raises(sw.SwitchError, match="did not start or answer /healthz with 200 on web1"):
        make(app_root, upstream, host, staged=staged).execute()
    assert "demo@green.service" not in host.active
    assert upstream.read_text() == before
    assert target(app_root / "current") == OLD


def test_a_failed_stage_stops_its_color_and_says_traffic_stays(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    host.socket_statuses = [503]
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).stage()
    assert f"traffic stays on the live release {OLD}" in failed.value.msg
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])
    assert "demo@green.service" not in host.active
    assert not host.commands(["nginx"])


def test_unstage_stops_the_idle_color_only_when_it_runs_the_release(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    make(app_root, upstream, host).stage()
    host.active.add("demo@blue.service")  # the live color
    # Another release's unstage leaves it.
    report = make(app_root, upstream, host, release=OLD).unstage()
    assert not report.changed and "demo@green.service" in host.active
    report = make(app_root, upstream, host).unstage()
    assert report.changed and [s["step"] for s in report.steps] == ["unstage"]
    assert host.active == {"demo@blue.service"}
    # Again: nothing left to stop.
    assert not make(app_root, upstream, host).unstage().changed


def test_the_module_stages_without_the_nginx_options(tmp_path: Path) -> None:
    root = make_app_root(tmp_path)
    base = {"app": "demo", "app_root": str(root), "release": NEW, "_ansible_check_mode": True}
    module = "roles/release/library/djdeploy_switch.py"
    staged = {**base, "state": "staged", "socket_dir": "/run/demo", "health_host": "demo.test"}
    rc, result, output = run_module(module, staged, tmp_path)
    assert rc == 0, output
    assert (result["new_color"], result["changed"]) == ("green", True)
    rc, result, output = run_module(module, {**base, "state": "staged"}, tmp_path)
    assert rc != 0 and result["msg"] == (
        "state is staged but all of the following are missing: socket_dir, health_host"
    )
    rc, result, output = run_module(module, {**staged, "web": False}, tmp_path)
    assert rc != 0 and result["msg"] == "release: state=staged is for a web host (web=true)"
    rc, result, output = run_module(module, {**staged, "release": None}, tmp_path)
    assert rc != 0 and result["msg"] == (
        "release: djdeploy_switch needs release (or rollback) with state=staged"
    )
    # A worker-only host in the abort's loop: nothing to stop.
    rc, result, output = run_module(module, {**base, "state": "unstaged", "web": False}, tmp_path)
    assert rc == 0 and not result["changed"], output


def test_the_drain_counts_only_processes_that_are_still_nginx_workers(
    app_root: Path, upstream: Path, tmp_path: Path
) -> None:
    host = FakeHost()
    host.proc = tmp_path / "proc"
    for pid, cmdline in (("100", b"nginx: worker process\0"), ("101", b"python3\0")):
        (host.proc / pid).mkdir(parents=True)
        (host.proc / pid / "cmdline").write_bytes(cmdline)
    switch = make(app_root, upstream, host)
    # 101 is another process now (its PID was reused), 102 is gone.
    assert switch._still_workers({"100", "101", "102"}) == {"100"}
