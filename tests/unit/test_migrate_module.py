"""The migrate module (roles/release/library/djdeploy_migrate.py) against a fake manage.py.

The release is a temporary directory; a fake runner plays `<app>-manage shell -c <plan script>`
(printing a plan as files/migration_plan.py does) and `<app>-manage migrate`, and records what
it was asked to run, as whom and with which environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from ansible.plugins.filter.core import to_json

from .loader import load

mig = load("roles/release/library/djdeploy_migrate.py")

MANAGE = "/usr/local/bin/demo-manage"
SCRIPT = "print('the plan script')"
LIVE = "20260101T000000Z-aaaaaaaa"
DJANGO_OPS = "django.db.migrations.operations"


def op(kind: str, describe: str, **extra: Any) -> dict[str, Any]:
    module = f"{DJANGO_OPS}.special" if kind.startswith("Run") else f"{DJANGO_OPS}.fields"
    return {"type": kind, "module": module, "describe": describe, "reversible": True, **extra}


def printed(plan: list[dict[str, Any]]) -> str:
    """What files/migration_plan.py prints (Django 5.2's shell may print a line first)."""
    return "3 objects imported automatically\nDJDEPLOY-MIGRATION-PLAN " + json.dumps(plan) + "\n"


NOTHING = printed([])
SAFE_PLAN = [
    {
        "app": "greetings",
        "name": "0003_backup_probe",
        "operations": [op("RunPython", "Raw Python operation", reverse=True)],
    },
    {
        "app": "shop",
        "name": "0012_auto_20260101_1200",
        "operations": [op("AddField", "Add field sku to product", field={"null": True})],
    },
]
PLAN = printed(SAFE_PLAN)
UNSAFE = printed(
    [
        {
            "app": "greetings",
            "name": "0003_remove_greeting_text",
            "operations": [op("RemoveField", "Remove field text from greeting")],
        }
    ]
)
APPLIED = "Operations to perform:\n  Apply all migrations: greetings\nRunning migrations:\n  OK\n"
TRACEBACK = (
    "Traceback (most recent call last):\n  ...\nRuntimeError: this migration fails on purpose\n"
)
BACKUP = {"host": "db1", "file": "/var/backups/djdeploy/demo/20260102T000000Z-bb-pre-migrate.dump"}


class FakeManage:
    def __init__(self, plan: str = NOTHING, plan_rc: int = 0, migrate_rc: int = 0) -> None:
        self.plan, self.plan_rc, self.migrate_rc = plan, plan_rc, migrate_rc
        self.migrate_out = APPLIED
        self.commands: list[Any] = []

    def run(self, cmd: Any) -> tuple[int, str, str]:
        self.commands.append(cmd)
        argv = cmd.argv
        assert argv[0] == MANAGE
        if "DJDEPLOY_COMMAND" in cmd.env:
            assert argv == [MANAGE]
            if cmd.env["DJDEPLOY_COMMAND"] == "false":
                return 1, "warming the cache\n", "CommandError: release phase failed\n"
            return 0, "ok\n", ""
        assert argv[1] in ("shell", "migrate")
        if argv[1] == "shell":
            assert argv[2:] == ["-c", SCRIPT]
            return self.plan_rc, self.plan, "boom at import\n" if self.plan_rc else ""
        if self.migrate_rc:
            return self.migrate_rc, "Running migrations:\n", TRACEBACK
        return 0, self.migrate_out, ""

    @property
    def argvs(self) -> list[list[str]]:
        return [c.argv for c in self.commands]


@pytest.fixture
def release(tmp_path: Path) -> Path:
    path = tmp_path / "releases" / "20260102T000000Z-bbbbbbbb"
    path.mkdir(parents=True)
    return path


def migrator(
    release: Path, fake: FakeManage, chowns: list[tuple[str, int, int]] | None = None, **kw: Any
) -> Any:
    account = mig.Account("demo", 1234, "demo", 1235, "/home/demo", (1235, 33))
    cfg = mig.Config(
        manage=MANAGE,
        release_dir=release,
        account=account,
        owner_uid=os.getuid(),
        owner_gid=os.getgid(),
        base_env={"https_proxy": "http://proxy:3128"},
        plan_script=SCRIPT,
        **{"live": LIVE, **kw},
    )
    log = chowns if chowns is not None else []

    def chown(path: Path, uid: int, gid: int) -> None:
        log.append((path.name, uid, gid))

    return mig.Migrator(cfg, run=fake.run, chown=chown)


def record(release: Path, name: str = ".djdeploy-migrations.json") -> str:
    return (release / name).read_text()


def test_nothing_to_migrate_plans_and_records_in_one_call(release: Path) -> None:
    fake = FakeManage()
    chowns: list[tuple[str, int, int]] = []
    result = migrator(release, fake, chowns).plan()
    assert fake.argvs == [[MANAGE, "shell", "-c", SCRIPT]]
    assert result.pending is False
    assert result.migrations == []
    assert result.changed is True
    # What the copy of `[] | to_json` in a folded scalar wrote: the JSON and a newline.
    assert record(release) == to_json([]) + "\n"
    path = release / ".djdeploy-migrations.json"
    assert path.stat().st_mode & 0o777 == 0o640
    assert chowns and chowns[-1][1:] == (os.getuid(), os.getgid())
    assert not (release / ".djdeploy-backup.json").exists()
    assert not [p for p in release.iterdir() if "djdeploy-tmp" in p.name]
    # Again: the record is there, identical: nothing changes.
    again = migrator(release, FakeManage()).plan()
    assert again.changed is False


def test_manage_runs_as_the_runtime_user_with_the_release_selected(release: Path) -> None:
    fake = FakeManage()
    migrator(release, fake).plan()
    (cmd,) = fake.commands
    assert cmd.account.user == "demo"
    assert cmd.account.extra_groups == (1235, 33)
    env = cmd.env
    assert env["DJDEPLOY_RELEASE_DIR"] == str(release)
    assert env["HOME"] == "/home/demo"
    assert env["USER"] == env["LOGNAME"] == "demo"
    assert env["https_proxy"] == "http://proxy:3128"
    assert "SECRET" not in " ".join(env)


def test_pending_migrations_are_listed_and_nothing_is_written(release: Path) -> None:
    fake = FakeManage(plan=PLAN)
    result = migrator(release, fake).plan()
    assert result.pending is True
    assert result.migrations == ["greetings.0003_backup_probe", "shop.0012_auto_20260101_1200"]
    assert result.changed is False
    assert result.plan == [
        {"name": "greetings.0003_backup_probe", "reversible": True},
        {"name": "shop.0012_auto_20260101_1200", "reversible": True},
    ]
    assert result.as_dict()["refused"] is False
    assert result.as_dict()["unsafe"] == []
    assert list(release.iterdir()) == []


def test_parse_plan_reads_the_marker_line_only() -> None:
    assert mig.parse_plan(NOTHING) == []
    assert mig.parse_plan("noise\n" + PLAN) == SAFE_PLAN
    for bad in ("no plan here\n", "DJDEPLOY-MIGRATION-PLAN {}\n", "DJDEPLOY-MIGRATION-PLAN [1]\n"):
        with pytest.raises(ValueError, match="plan"):
            mig.parse_plan(bad)


def test_unsafe_operations_refuse_before_anything_is_written(release: Path) -> None:
    fake = FakeManage(plan=UNSAFE)
    with pytest.raises(mig.MigrateError) as info:
        migrator(release, fake).plan()
    data = info.value.as_dict()
    assert data["refused"] is True
    assert data["migrations"] == ["greetings.0003_remove_greeting_text"]
    assert "greetings.0003_remove_greeting_text" in data["msg"]
    assert "RemoveField: Remove field text from greeting" in data["msg"]
    assert "release_allow_unsafe_migrations=true" in data["msg"]
    (finding,) = data["unsafe"]
    assert finding["class"] == "unsafe"
    assert finding["refused"] is True
    # Only the plan ran: no migrate, no record.
    assert fake.argvs == [[MANAGE, "shell", "-c", SCRIPT]]
    assert list(release.iterdir()) == []


@pytest.mark.parametrize(
    ("kw", "allowed_by"),
    [
        ({"allow_unsafe": True}, "release_allow_unsafe_migrations"),
        (
            {"allow_unsafe_list": ["greetings.0003_remove_greeting_text"]},
            "release_allow_unsafe_migrations_list",
        ),
        ({"live": ""}, "no live release"),
    ],
    ids=["allow-all", "allow-list", "first-deploy"],
)
def test_allowed_unsafe_operations_proceed_and_are_recorded(
    release: Path, kw: dict[str, Any], allowed_by: str
) -> None:
    m = migrator(release, FakeManage(plan=UNSAFE), **kw)
    plan = m.plan()
    assert plan.pending is True
    (entry,) = plan.plan or []
    assert entry["allowed_by"] == allowed_by
    assert entry["unsafe"] == ["RemoveField: Remove field text from greeting (unsafe)"]
    m.migrate(plan.plan or [], None)
    assert json.loads(record(release)) == [entry]


def test_an_allow_list_entry_that_is_no_migration_name_fails_naming_the_knob(
    release: Path,
) -> None:
    fake = FakeManage(plan=UNSAFE)
    with pytest.raises(mig.MigrateError) as info:
        migrator(release, fake, allow_unsafe_list=["0003_remove"]).plan()
    assert "release_allow_unsafe_migrations_list" in info.value.msg
    assert "0003_remove" in info.value.msg
    assert fake.commands == []


def test_a_plan_script_that_prints_no_plan_fails_with_its_output(release: Path) -> None:
    with pytest.raises(mig.MigrateError) as info:
        migrator(release, FakeManage(plan="Traceback: nope\n")).plan()
    assert "printed no plan" in info.value.msg
    assert info.value.stdout == "Traceback: nope\n"


def test_a_failed_plan_carries_the_output_and_writes_nothing(release: Path) -> None:
    fake = FakeManage(plan="", plan_rc=1)
    with pytest.raises(mig.MigrateError) as info:
        migrator(release, fake).plan()
    data = info.value.as_dict()
    assert data["rc"] == 1
    assert data["stderr"] == "boom at import\n"
    assert "listing the migrations of 20260102T000000Z-bbbbbbbb failed" in data["msg"]
    assert list(release.iterdir()) == []


def test_migrate_runs_then_records_migrations_and_backup(release: Path) -> None:
    fake = FakeManage(plan=PLAN)
    m = migrator(release, fake)
    plan = m.plan()
    result = m.migrate(plan.plan or [], BACKUP)
    assert fake.argvs[-1] == [MANAGE, "migrate", "--noinput", "--no-color"]
    assert result.changed is True
    assert result.migrations == plan.migrations
    assert record(release) == to_json(plan.plan) + "\n"
    assert json.loads(record(release)) == plan.plan
    backup = record(release, ".djdeploy-backup.json")
    assert backup == to_json({"host": BACKUP["host"], "file": BACKUP["file"]}) + "\n"
    for name in (".djdeploy-migrations.json", ".djdeploy-backup.json"):
        assert (release / name).stat().st_mode & 0o777 == 0o640


def test_migrate_without_a_backup_writes_no_backup_record(release: Path) -> None:
    result = migrator(release, FakeManage()).migrate(["a.0001_initial"], None)
    assert result.records == [str(release / ".djdeploy-migrations.json")]
    assert not (release / ".djdeploy-backup.json").exists()


def test_nothing_applied_and_records_identical_is_no_change(release: Path) -> None:
    migrator(release, FakeManage()).migrate(["a.0001_initial"], BACKUP)
    fake = FakeManage()
    fake.migrate_out = "Operations to perform:\n  No migrations to apply.\n"
    result = migrator(release, fake).migrate(["a.0001_initial"], BACKUP)
    assert result.changed is False


def test_a_failed_migrate_writes_no_record(release: Path) -> None:
    fake = FakeManage(migrate_rc=1)
    with pytest.raises(mig.MigrateError) as info:
        migrator(release, fake).migrate(["a.0001_initial"], BACKUP)
    data = info.value.as_dict()
    # The rescue's message takes the last lines of stderr: the cause is there.
    assert "fails on purpose" in data["stderr"].splitlines()[-1]
    assert data["rc"] == 1
    assert list(release.iterdir()) == []


def test_a_record_replaces_a_symlink_instead_of_following_it(release: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (release / ".djdeploy-migrations.json").symlink_to(victim)
    migrator(release, FakeManage()).plan()
    assert victim.read_text() == "keep me"
    assert not (release / ".djdeploy-migrations.json").is_symlink()
    assert record(release) == "[]\n"


def test_a_record_that_cannot_be_written_fails_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-release"
    with pytest.raises(mig.MigrateError) as info:
        migrator(missing, FakeManage()).plan()
    assert str(missing / ".djdeploy-migrations.json") in info.value.msg


def test_check_mode_plans_but_neither_writes_nor_migrates(release: Path) -> None:
    fake = FakeManage()
    result = migrator(release, fake, check_mode=True).plan()
    assert result.changed is True
    assert list(release.iterdir()) == []
    fake = FakeManage(plan=PLAN)
    result = migrator(release, fake, check_mode=True).migrate(["a.0001_x"], BACKUP)
    assert fake.commands == []
    assert result.changed is True
    assert list(release.iterdir()) == []


def command_runs(fake: FakeManage) -> list[str]:
    return [c.env["DJDEPLOY_COMMAND"] for c in fake.commands if "DJDEPLOY_COMMAND" in c.env]


def test_release_commands_run_after_an_empty_plan_as_the_runtime_user(release: Path) -> None:
    fake = FakeManage()
    commands = ["python manage.py warm_cache", "python manage.py notify"]
    result = migrator(release, fake, commands=commands).plan()
    assert command_runs(fake) == commands
    assert result.commands == commands and result.changed
    for cmd in fake.commands[1:]:
        assert cmd.account.user == "demo"
        assert cmd.env["DJDEPLOY_RELEASE_DIR"] == str(release)
    # The record is written first: the commands run once the migration step is done.
    assert record(release) == to_json([]) + "\n"


def test_release_commands_wait_for_migrate_when_the_plan_has_migrations(release: Path) -> None:
    fake = FakeManage(plan=PLAN)
    m = migrator(release, fake, commands=["python manage.py warm_cache"])
    plan = m.plan()
    assert command_runs(fake) == [] and plan.commands == []
    result = m.migrate(plan.plan or [], None)
    assert fake.argvs[-2] == [MANAGE, "migrate", "--noinput", "--no-color"]
    assert command_runs(fake) == ["python manage.py warm_cache"]
    assert result.commands == ["python manage.py warm_cache"]


def test_a_failing_release_command_fails_with_its_name_and_output(release: Path) -> None:
    fake = FakeManage()
    m = migrator(release, fake, commands=["false", "never"], commands_knob="app_release_commands")
    with pytest.raises(mig.MigrateError) as info:
        m.plan()
    data = info.value.as_dict()
    assert data["complete"] is True
    assert data["msg"].startswith(
        "release: the release command 'false' (app_release_commands) of"
        " 20260102T000000Z-bbbbbbbb failed (rc 1); no host was switched"
    )
    assert "warming the cache | CommandError: release phase failed" in data["msg"]
    assert command_runs(fake) == ["false"]


def test_check_mode_runs_no_release_command(release: Path) -> None:
    fake = FakeManage()
    result = migrator(release, fake, commands=["python manage.py x"], check_mode=True).plan()
    assert command_runs(fake) == [] and result.changed
