#!/usr/bin/python
"""The migrations of a new release, in as few remote tasks as possible.

Runs as root and runs the app's ``manage.py`` (through the ``<app>-manage`` wrapper) as the
runtime user (``subprocess`` ``user=``, ``group=``, ``extra_groups=``; no sudo), with a minimal
environment and ``DJDEPLOY_RELEASE_DIR`` naming the new release. Two steps, two calls:

- ``plan``: ``migrate --plan``; when nothing is planned it also writes the release's empty
  migrations record, so a release without migrations costs one task.
- ``migrate``: ``migrate --noinput``, then the records: the migrations the plan listed
  (rollback reads them) and, when a backup was taken before, where that dump is.

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
  - I(step=plan) runs C(migrate --plan --no-color). When it says C(No planned migration
    operations), the empty list is written to C(.djdeploy-migrations.json) in I(release_dir)
    and the result says C(pending=false); otherwise nothing is written and the result lists the
    planned migrations (lines C(<app label>.<migration name>)).
  - I(step=migrate) runs C(migrate --noinput --no-color), then writes I(migrations) to
    C(.djdeploy-migrations.json) and, when I(backup) is given, I(backup) to
    C(.djdeploy-backup.json). A failed migrate writes nothing.
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
  migrations:
    description: With I(step=migrate), the migrations the plan listed (its C(migrations)).
    type: list
    elements: str
    default: []
  backup:
    description:
      - With I(step=migrate), the dump taken before migrating (keys C(host), C(file)), recorded
        in C(.djdeploy-backup.json). Omitted when no backup was taken.
    type: dict
notes:
  - Check mode runs the plan (it only reads) and reports the records it would write; it never
    runs migrate.
author: djdeploy maintainers
"""

EXAMPLES = r"""
- name: Migrate | List unapplied migrations
  djdeploy_migrate:
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
    migrations: "{{ plan.migrations }}"
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
  description: Output of C(migrate --plan) (step plan).
  returned: step plan
  type: str
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
import re  # noqa: E402
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


MIGRATIONS_RECORD = ".djdeploy-migrations.json"
BACKUP_RECORD = ".djdeploy-backup.json"
RECORD_MODE = 0o640
NOTHING_PLANNED = "No planned migration operations"
NOTHING_APPLIED = "No migrations to apply"
# A line of `migrate --plan` naming a migration: <app label>.<migration name>.
MIGRATION_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*[.][A-Za-z0-9_]+")


def lookup_ids(owner: str, group: str) -> tuple[int, int]:
    return lookup_uid(owner), lookup_gid(group)


def parse_plan(stdout: str) -> tuple[bool, list[str]]:
    """(pending, migrations) from the output of `migrate --plan`."""
    pending = NOTHING_PLANNED not in stdout
    names = [line.strip() for line in stdout.splitlines()]
    return pending, [name for name in names if MIGRATION_LINE.fullmatch(name)]


def record_text(value: Any) -> str:
    """A record as written: JSON on one line, then a newline."""
    return json.dumps(value) + "\n"


class MigrateError(Exception):
    """A step failed; carries what the command said."""

    def __init__(self, msg: str, rc: int | None = None, stdout: str = "", stderr: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"msg": self.msg, "stdout": self.stdout, "stderr": self.stderr}
        if self.rc is not None:
            data["rc"] = self.rc
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


@dataclass
class Result:
    pending: bool = False
    migrations: list[str] = field(default_factory=list)
    changed: bool = False
    stdout: str = ""
    stderr: str = ""
    plan: str | None = None
    records: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "changed": self.changed,
            "pending": self.pending,
            "migrations": self.migrations,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "records": self.records,
        }
        if self.plan is not None:
            data["plan"] = self.plan
        return data


class Migrator:
    def __init__(self, cfg: Config, run: Runner = run_command, chown: Chown = lchown) -> None:
        self.cfg = cfg
        self.run = run
        self.chown = chown

    def _manage(self, *args: str) -> tuple[int, str, str]:
        account = self.cfg.account
        env = minimal_env(
            account, self.cfg.base_env, {"DJDEPLOY_RELEASE_DIR": str(self.cfg.release_dir)}
        )
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
        """migrate --plan; with nothing planned, the empty migrations record too."""
        rc, out, err = self._manage("migrate", "--plan", "--no-color")
        if rc != 0:
            raise MigrateError(
                f"release: {self.cfg.manage} migrate --plan failed (rc {rc})", rc, out, err
            )
        pending, migrations = parse_plan(out)
        result = Result(pending=pending, migrations=migrations, stdout=out, stderr=err, plan=out)
        if not pending:
            self._record(MIGRATIONS_RECORD, [], result)
        return result

    def migrate(self, migrations: list[str], backup: dict[str, Any] | None) -> Result:
        """migrate --noinput, then the records of what it applied and of the backup."""
        result = Result(pending=True, migrations=list(migrations))
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
            "migrations": {"type": "list", "elements": "str", "default": []},
            "backup": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    p = module.params
    backup = p["backup"]
    if backup is not None and not (backup.get("host") and backup.get("file")):
        module.fail_json(msg="release: djdeploy_migrate: backup needs host and file")
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
