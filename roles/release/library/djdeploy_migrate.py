#!/usr/bin/python
"""The migrations of a new release, in as few remote tasks as possible.

Runs as root and runs the app's ``manage.py`` (through the ``<app>-manage`` wrapper) as the
runtime user (``subprocess`` ``user=``, ``group=``, ``extra_groups=``; no sudo), with a minimal
environment and ``DJDEPLOY_RELEASE_DIR`` naming the new release. Two steps, two calls:

- ``plan``: the unapplied migrations, from Django's own MigrationLoader and MigrationExecutor
  (files/migration_plan.py through ``manage.py shell -c``), every operation classified for the
  release that is live now (module_utils/djdeploy_migration_safety.py); unsafe operations
  refuse the release (unless the operator allowed them) before anything changes. When nothing
  is planned it also writes the release's empty migrations record, so a release without
  migrations costs one task.
- ``migrate``: ``migrate --noinput``, then the records: the migrations the plan listed, whether
  each can be migrated backwards and which unsafe operations were allowed (rollback and
  playbooks/releases.yml read them) and, when a backup was taken before, where that dump is.

The records are written by root, atomically, owned by the deploy user and the runtime group,
mode 0640.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_migrate
short_description: List and apply the migrations of a new release, and record them
description:
  - Runs as root. Runs the app's manage.py wrapper (I(manage)) as I(user) with a minimal
    environment (HOME, USER, LOGNAME, PATH, LANG, the proxy variables of the module's own
    environment) plus C(DJDEPLOY_RELEASE_DIR=release_dir), with that user's groups.
  - I(step=plan) runs I(plan_script) with C(manage.py shell -c); Django's MigrationExecutor
    computes the migrations C(migrate) would apply and describes each operation. Each operation
    is classified safe, unsafe or unknown for the code of the live release (the release role's
    README has the table). When I(live) is set (a release is serving) and an unsafe or unknown
    operation is neither allowed by I(allow_unsafe) nor by its migration in
    I(allow_unsafe_list), the module fails with one message listing app, migration, operation
    and the expand/contract way to do it, and C(refused=true); nothing is written.
  - With nothing planned, the empty list is written to C(.djdeploy-migrations.json) in
    I(release_dir) and the result says C(pending=false); otherwise nothing is written and the
    result lists the planned migrations and their records (C(plan)).
  - I(step=migrate) runs C(migrate --noinput --no-color), then writes I(migrations) (the plan's
    C(plan) entries, or plain names) to C(.djdeploy-migrations.json) and, when I(backup) is
    given, I(backup) to C(.djdeploy-backup.json). A failed migrate writes nothing.
  - I(commands), the release commands (Heroku's release phase), run once per release after the
    migrations, at the end of I(step=plan) when nothing is planned, else at the end of
    I(step=migrate). Each runs as I(user) through I(manage) with C(DJDEPLOY_COMMAND) (the
    release directory, its venv first on C(PATH), the app's environment); the first that fails
    fails the module with C(complete=true), a message naming the command, and its output.
  - Records belong to I(owner):I(group), mode 0640, and are replaced atomically (never through a
    symlink); an identical record is left alone (not changed).
options:
  step:
    description: C(plan) or C(migrate).
    type: str
    choices: [plan, migrate]
    default: plan
  manage:
    description: The manage.py wrapper (C(/usr/local/bin/<app>-manage)).
    type: path
    required: true
  release_dir:
    description: The new release (C(DJDEPLOY_RELEASE_DIR) and where the records go).
    type: path
    required: true
  user:
    description: Runs manage.py (the app's runtime user).
    type: str
    required: true
  owner:
    description: Owner of the records (the deploy user).
    type: str
    required: true
  group:
    description: Group of the records (the runtime group).
    type: str
    required: true
  plan_script:
    description:
      - With I(step=plan), the Python code that prints the plan
        (roles/release/files/migration_plan.py), run with C(manage.py shell -c).
    type: str
    default: ""
  live:
    description:
      - With I(step=plan), the id of the release that serves now; empty on a first deploy (no old
        code to break; unsafe operations are recorded, not refused).
    type: str
    default: ""
  allow_unsafe:
    description: With I(step=plan), allow every unsafe or unknown operation (recorded).
    type: bool
    default: false
  allow_unsafe_list:
    description:
      - With I(step=plan), migrations (C(<app label>.<migration name>)) whose unsafe or unknown
        operations are allowed (recorded).
    type: list
    elements: str
    default: []
  commands:
    description:
      - Shell commands run once per release after the migrations (see above), in order.
    type: list
    elements: str
    default: []
  commands_knob:
    description: Name of the setting that lists the release commands (in messages).
    type: str
    default: release_release_commands
  migrations:
    description:
      - With I(step=migrate), what to record; the plan's C(plan) (entries with C(name),
        C(reversible), C(unsafe), C(allowed_by)), or migration names.
    type: list
    elements: raw
    default: []
  backup:
    description:
      - With I(step=migrate), the dump taken before migrating (keys C(host), C(file)), recorded
        in C(.djdeploy-backup.json). Omitted when no backup was taken.
    type: dict
notes:
  - Check mode runs the plan (it only reads) and reports the records it would write; it never
    runs migrate.
  - The plan reads the database (the applied migrations) as the runtime user; it changes
    nothing, so a refusal happens before the backup and before any change.
author: djdeploy maintainers
"""

EXAMPLES = r"""
- name: Migrate | List unapplied migrations, refuse unsafe ones
  djdeploy_migrate:
    plan_script: "{{ lookup('ansible.builtin.file', 'migration_plan.py') }}"
    live: 20260101T000000Z-aaaaaaaa
    allow_unsafe_list: [shop.0012_remove_product_legacy_code]
    manage: /usr/local/bin/shop-manage
    release_dir: /srv/shop/releases/20260102T000000Z-bbbbbbbb
    user: shop
    owner: deploy
    group: shop
  register: plan

- name: Migrate | Run migrate
  djdeploy_migrate:
    step: migrate
    manage: /usr/local/bin/shop-manage
    release_dir: /srv/shop/releases/20260102T000000Z-bbbbbbbb
    user: shop
    owner: deploy
    group: shop
    migrations: "{{ plan.plan }}"
    backup: {host: db1, file: /var/backups/djdeploy/shop/20260102T000000Z-bbbbbbbb-pre-migrate.dump}
  when: plan.pending
"""

RETURN = r"""
pending:
  description: Whether the plan lists operations (C(migrate) has something to do).
  returned: always
  type: bool
migrations:
  description: The migrations the plan lists, or those recorded (step migrate).
  returned: always
  type: list
  elements: str
  sample: [greetings.0003_backup_probe]
plan:
  description:
    - The records of the planned migrations (step plan), in the order migrate applies them.
  returned: step plan
  type: list
  elements: dict
  sample:
    - {name: greetings.0003_remove_greeting_text, reversible: true,
       unsafe: ["RemoveField: Remove field text from greeting (unsafe)"],
       allowed_by: release_allow_unsafe_migrations_list}
unsafe:
  description:
    - Every unsafe or unknown operation of the plan (step plan), with C(migration), C(index),
      C(type), C(operation), C(class), C(reason), C(advice) and C(refused).
  returned: step plan
  type: list
  elements: dict
refused:
  description: Whether unsafe operations refused the release (then the module fails).
  returned: step plan
  type: bool
commands:
  description: The release commands this call ran (none when they are left to step migrate).
  returned: always
  type: list
  elements: str
complete:
  description: On failure, whether I(msg) is the whole message for the user (a release command
    failed; its output is in it).
  returned: failure
  type: bool
stdout:
  description: Output of the last command run.
  returned: always
  type: str
stderr:
  description: Error output of the last command run.
  returned: always
  type: str
records:
  description: Records written (or, in check mode, that would be written).
  returned: always
  type: list
  elements: str
"""

import json  # noqa: E402
import stat  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_accounts import (
        INHERIT_UMASK,
        Account,
        Command,
        Runner,
        lookup_account,
        lookup_gid,
        lookup_uid,
        minimal_env,
        passed_env,
        run_command,
    )
    from djdeploy_files import Chown, lchown, write_atomic
    from djdeploy_migration_safety import assess, bad_allow_entries, record_names
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_accounts import (
        INHERIT_UMASK,
        Account,
        Command,
        Runner,
        lookup_account,
        lookup_gid,
        lookup_uid,
        minimal_env,
        passed_env,
        run_command,
    )
    from ansible.module_utils.djdeploy_files import Chown, lchown, write_atomic
    from ansible.module_utils.djdeploy_migration_safety import (
        assess,
        bad_allow_entries,
        record_names,
    )


MIGRATIONS_RECORD = ".djdeploy-migrations.json"
BACKUP_RECORD = ".djdeploy-backup.json"
RECORD_MODE = 0o640
NOTHING_APPLIED = "No migrations to apply"
# The line files/migration_plan.py prints the plan on (JSON after the marker).
PLAN_MARKER = "DJDEPLOY-MIGRATION-PLAN "


def lookup_ids(owner: str, group: str) -> tuple[int, int]:
    return lookup_uid(owner), lookup_gid(group)


def parse_plan(stdout: str) -> list[dict[str, Any]]:
    """The plan files/migration_plan.py printed (the last marker line); ValueError if none."""
    lines = [line for line in stdout.splitlines() if line.startswith(PLAN_MARKER)]
    if not lines:
        raise ValueError("the plan script printed no plan")
    plan = json.loads(lines[-1][len(PLAN_MARKER) :])
    if not isinstance(plan, list) or not all(
        isinstance(m, dict) and isinstance(m.get("operations"), list) for m in plan
    ):
        raise ValueError("the plan script printed something that is not a plan")
    return plan


def record_text(value: Any) -> str:
    """A record as written: JSON on one line, then a newline."""
    return json.dumps(value) + "\n"


class MigrateError(Exception):
    """A step failed; carries what the command said."""

    def __init__(
        self,
        msg: str,
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.extra = extra or {}

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"msg": self.msg, "stdout": self.stdout, "stderr": self.stderr}
        if self.rc is not None:
            data["rc"] = self.rc
        data.update(self.extra)
        return data


@dataclass
class Config:
    manage: str
    release_dir: Path
    account: Account
    owner_uid: int
    owner_gid: int
    base_env: dict[str, str] = field(default_factory=dict)
    check_mode: bool = False
    plan_script: str = ""
    live: str = ""
    allow_unsafe: bool = False
    allow_unsafe_list: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    commands_knob: str = "release_release_commands"


@dataclass
class Result:
    pending: bool = False
    migrations: list[str] = field(default_factory=list)
    changed: bool = False
    stdout: str = ""
    stderr: str = ""
    plan: list[dict[str, Any]] | None = None
    unsafe: list[dict[str, Any]] | None = None
    records: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "commands": self.commands,
            "changed": self.changed,
            "pending": self.pending,
            "migrations": self.migrations,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "records": self.records,
        }
        if self.plan is not None:
            data["plan"] = self.plan
            data["unsafe"] = self.unsafe or []
            data["refused"] = False
        return data


class Migrator:
    def __init__(self, cfg: Config, run: Runner = run_command, chown: Chown = lchown) -> None:
        self.cfg = cfg
        self.run = run
        self.chown = chown

    def _manage(self, *args: str, command: str = "") -> tuple[int, str, str]:
        account = self.cfg.account
        extra = {"DJDEPLOY_RELEASE_DIR": str(self.cfg.release_dir)}
        if command:
            extra["DJDEPLOY_COMMAND"] = command
        env = minimal_env(account, self.cfg.base_env, extra)
        # The module's own umask, as manage.py always had here (the build sets its own).
        return self.run(Command([self.cfg.manage, *args], account, env, umask=INHERIT_UMASK))

    def _record(self, name: str, value: Any, result: Result) -> None:
        """Write one record unless it is already there, identical (content, owner, mode)."""
        path = self.cfg.release_dir / name
        text = record_text(value)
        result.records.append(str(path))
        if self._is_current(path, text):
            return
        result.changed = True
        if self.cfg.check_mode:
            return
        uid, gid = self.cfg.owner_uid, self.cfg.owner_gid
        try:
            write_atomic(path, text, RECORD_MODE, own=lambda tmp, _fd: self.chown(tmp, uid, gid))
        except OSError as exc:
            raise MigrateError(f"release: writing {path} failed: {exc}") from exc

    def _is_current(self, path: Path, text: str) -> bool:
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                return False
            same = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
                self.cfg.owner_uid,
                self.cfg.owner_gid,
                RECORD_MODE,
            )
            return same and path.read_text() == text
        except (OSError, UnicodeDecodeError):
            return False

    def plan(self) -> Result:
        """The plan, classified; unsafe operations refuse the release (MigrateError with
        refused) unless allowed; with nothing planned, the empty migrations record too."""
        cfg = self.cfg
        bad = bad_allow_entries(cfg.allow_unsafe_list)
        if bad:
            raise MigrateError(
                "release: release_allow_unsafe_migrations_list takes migrations as"
                f" <app label>.<migration name> (e.g. shop.0012_remove_product_code), got {bad}"
            )
        rc, out, err = self._manage("shell", "-c", cfg.plan_script)
        if rc != 0:
            raise MigrateError(
                f"release: listing the migrations of {cfg.release_dir.name} failed"
                f" ({cfg.manage} shell, rc {rc})",
                rc,
                out,
                err,
            )
        try:
            planned = parse_plan(out)
        except ValueError as exc:
            raise MigrateError(f"release: {exc} ({cfg.manage} shell)", rc, out, err) from exc
        judged = assess(
            planned,
            live=cfg.live,
            release=cfg.release_dir.name,
            allow_all=cfg.allow_unsafe,
            allow=cfg.allow_unsafe_list,
        )
        names = [str(m["name"]) for m in judged.migrations]
        if judged.refused:
            raise MigrateError(
                judged.message,
                stdout=out,
                stderr=err,
                extra={
                    "refused": True,
                    "pending": True,
                    "migrations": names,
                    "plan": judged.migrations,
                    "unsafe": judged.classification(),
                },
            )
        result = Result(
            pending=bool(planned),
            migrations=names,
            stdout=out,
            stderr=err,
            plan=judged.migrations,
            unsafe=judged.classification(),
        )
        if not planned:
            self._record(MIGRATIONS_RECORD, [], result)
            self._release_commands(result)
        return result

    def _release_commands(self, result: Result) -> None:
        """The release phase: each command once, as the runtime user, in the new release."""
        cfg = self.cfg
        for command in cfg.commands:
            result.changed = True
            if cfg.check_mode:
                continue
            rc, out, err = self._manage(command=command)
            result.commands.append(command)
            if rc != 0:
                output = " | ".join(
                    line.rstrip() for line in (out + err).strip().splitlines()[-20:]
                )
                raise MigrateError(
                    f"release: the release command {command!r} ({cfg.commands_knob}) of"
                    f" {cfg.release_dir.name} failed (rc {rc}); no host was switched, the live"
                    f" release keeps serving. Output: {output}",
                    rc,
                    out,
                    err,
                    extra={"complete": True, "commands": result.commands},
                )

    def migrate(self, migrations: list[Any], backup: dict[str, Any] | None) -> Result:
        """migrate --noinput, then the records of what it applied and of the backup."""
        names = record_names(migrations)
        if names is None:
            raise MigrateError(
                "release: djdeploy_migrate: migrations must be names or entries with a name"
            )
        result = Result(pending=True, migrations=names)
        if self.cfg.check_mode:
            result.changed = True
        else:
            rc, out, err = self._manage("migrate", "--noinput", "--no-color")
            if rc != 0:
                raise MigrateError(
                    f"release: {self.cfg.manage} migrate failed (rc {rc})", rc, out, err
                )
            result.stdout, result.stderr = out, err
            result.changed = NOTHING_APPLIED not in out
        self._record(MIGRATIONS_RECORD, list(migrations), result)
        if backup is not None:
            self._record(BACKUP_RECORD, {"host": backup["host"], "file": backup["file"]}, result)
        self._release_commands(result)
        return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "choices": ["plan", "migrate"], "default": "plan"},
            "manage": {"type": "path", "required": True},
            "release_dir": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "owner": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "migrations": {"type": "list", "elements": "raw", "default": []},
            "backup": {"type": "dict"},
            "plan_script": {"type": "str", "default": ""},
            "live": {"type": "str", "default": ""},
            "allow_unsafe": {"type": "bool", "default": False},
            "allow_unsafe_list": {"type": "list", "elements": "str", "default": []},
            "commands": {"type": "list", "elements": "str", "default": []},
            "commands_knob": {"type": "str", "default": "release_release_commands"},
        },
        supports_check_mode=True,
    )
    p = module.params
    backup = p["backup"]
    if backup is not None and not (backup.get("host") and backup.get("file")):
        module.fail_json(msg="release: djdeploy_migrate: backup needs host and file")
    if p["step"] == "plan" and not p["plan_script"]:
        module.fail_json(msg="release: djdeploy_migrate: step plan needs plan_script")
    try:
        uid, gid = lookup_ids(p["owner"], p["group"])
        cfg = Config(
            manage=p["manage"],
            release_dir=Path(p["release_dir"]),
            account=lookup_account(p["user"]),
            owner_uid=uid,
            owner_gid=gid,
            base_env=passed_env(),
            check_mode=module.check_mode,
            plan_script=p["plan_script"],
            live=p["live"],
            allow_unsafe=p["allow_unsafe"],
            allow_unsafe_list=p["allow_unsafe_list"],
            commands=list(p["commands"]),
            commands_knob=p["commands_knob"],
        )
    except LookupError as exc:
        module.fail_json(msg=f"release: {exc}")
    migrator = Migrator(cfg)
    try:
        if p["step"] == "plan":
            result = migrator.plan()
        else:
            result = migrator.migrate(p["migrations"], backup)
    except MigrateError as exc:
        module.fail_json(**exc.as_dict())
    module.exit_json(**result.as_dict())


if __name__ == "__main__":
    main()
