#!/usr/bin/python
"""Read one host's release state in one call: the live record and, for a rollback, its target;
or, for playbooks/releases.yml, every release with the migrations it applied."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_releases
short_description: Read the live release record and resolve a rollback target (read-only)
description:
  - Reads C(<app_root>/current/<record>), the record of the live release (an empty C(live)
    when there is none).
  - With I(rollback), resolves the release to go back to (I(rollback_to), else the release
    the C(previous) link points at) and returns whether it exists, whether it is the live
    release, whether it carries the failure marker, and the migrations that the releases after
    it, up to the live one, applied (each release's C(.djdeploy-migrations.json), in id order).
  - With I(list), returns every release directory (in id order) with its record, its links
    (live, previous, next), its failure marker and the migrations it applied, each with whether
    Django can migrate it backwards and the unsafe operations that were allowed (records of
    older releases list names only), plus one line of text per release.
  - Changes nothing on the host.
options:
  app_root:
    description: The app's root (C(current), C(previous), C(releases/) below it).
    type: path
    required: true
  record:
    description: Name of the release record inside a release directory.
    type: str
    default: .djdeploy-release.json
  failed_marker:
    description: Name of the marker a release that failed its switch or migration carries.
    type: str
    default: .djdeploy-failed.json
  migrations_file:
    description: Name of the file listing the migrations a release applied (a JSON list).
    type: str
    default: .djdeploy-migrations.json
  rollback:
    description:
      - Resolve a rollback target; the live record must then exist (nothing to roll back from
        otherwise).
    type: bool
    default: false
  rollback_to:
    description: Release id to roll back to; empty for the release C(previous) points at.
    type: str
    default: ""
  check:
    description:
      - With I(rollback), fail (C(refused=true)) with the reason when the rollback must not go
        ahead, because the target does not exist, is the live release, failed its switch, or
        releases after it applied migrations and not I(allow_migrations). The same check as
        djdeploy_switch's I(rollback) option, for a caller that must know before the switch
        (a host about to leave the balancers' rotation).
    type: bool
    default: false
  allow_migrations:
    description: With I(check), allow a rollback past releases that applied migrations.
    type: bool
    default: false
  manage:
    description: With I(check), the manage.py wrapper named in the migrations message.
    type: str
    default: ""
  runtime_user:
    description: With I(check), the runtime user named in the migrations message.
    type: str
    default: ""
  list:
    description: List every release (C(releases), C(lines)).
    type: bool
    default: false
  host:
    description: Host name used in messages (pass C(inventory_hostname)); default the node name.
    type: str
attributes:
  check_mode:
    support: full
    description: The module only reads.
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Read the live release record
  djdeploy_releases:
    app_root: /srv/demo
    record: .djdeploy-release.json
  register: state

- name: Read the live release and the rollback target
  djdeploy_releases:
    app_root: /srv/demo
    record: .djdeploy-release.json
    failed_marker: .djdeploy-failed.json
    rollback: true
    rollback_to: ""
  register: state
"""

RETURN = r"""
live:
  description: The live release's record (id, commit, ...); empty when there is none.
  returned: always
  type: dict
target:
  description: The rollback target (empty unless I(rollback)).
  returned: always
  type: dict
  contains:
    id:
      description: The release id (empty when C(previous) is missing).
      type: str
    path:
      description: C(<app_root>/releases/<rollback_to>), or C(<app_root>/previous).
      type: str
    exists:
      description: Whether the release directory exists.
      type: bool
    live:
      description: Whether it is the live release.
      type: bool
    failed:
      description: Whether it carries the failure marker.
      type: bool
    applied_migrations:
      description:
        - Migrations applied by the releases after the target up to the live one (ids compared
          as strings, target < id <= live), in id order.
      type: list
      elements: str
    applied:
      description:
        - The same migrations as entries (C(name), C(release), C(reversible), C(unsafe),
          C(allowed_by)); C(reversible) is null for records of releases older than that field.
      type: list
      elements: dict
releases:
  description: With I(list), every release, in id order.
  returned: always (empty unless I(list))
  type: list
  elements: dict
  contains:
    id:
      description: The release id.
      type: str
    record:
      description: Its record (empty when the build did not finish).
      type: dict
    live:
      description: Whether C(current) points at it.
      type: bool
    previous:
      description: Whether C(previous) points at it.
      type: bool
    next:
      description: Whether C(next) points at it.
      type: bool
    failed:
      description: The failure marker's content (empty when there is none).
      type: dict
    migrations:
      description: The migrations it applied (entries as in C(target.applied)).
      type: list
      elements: dict
lines:
  description: With I(list), one line of text per release (C(*) marks the live one).
  returned: always (empty unless I(list))
  type: list
  elements: str
"""

import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_releases_lib import (
        Config,
        StateError,
        live_and_target,
        read_applied,
        read_json_state,
        read_live,
        release_ids,
        rollback_target,
    )
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_releases_lib import (
        Config,
        StateError,
        live_and_target,
        read_applied,
        read_json_state,
        read_live,
        release_ids,
        rollback_target,
    )

__all__ = ["Config", "StateError", "read_state"]


def _link_name(path: Path) -> str:
    return path.readlink().name if path.is_symlink() else ""


def migration_text(entry: dict[str, Any]) -> str:
    """One applied migration in a line of the listing."""
    reversible = entry.get("reversible")
    how = "reversible" if reversible else "irreversible" if reversible is False else "reversible?"
    unsafe = entry.get("unsafe") or []
    if unsafe:
        by = entry.get("allowed_by") or "not allowed"
        how += f", unsafe allowed by {by}: {'; '.join(str(u) for u in unsafe)}"
    return f"{entry['name']} ({how})"


def list_releases(cfg: Config) -> tuple[list[dict[str, Any]], list[str]]:
    """Every release in id order, and one line of text per release."""
    root = cfg.app_root
    links = {key: _link_name(root / key) for key in ("current", "previous", "next")}
    releases: list[dict[str, Any]] = []
    lines: list[str] = []
    for release in release_ids(root / "releases"):
        directory = root / "releases" / release
        if not directory.is_dir():
            continue
        record_path, failed_path = directory / cfg.record, directory / cfg.failed_marker
        record = read_json_state(record_path) if record_path.is_file() else {}
        failed = read_json_state(failed_path) if failed_path.is_file() else {}
        migrations = read_applied(directory / cfg.migrations_file, release)
        item = {
            "id": release,
            "record": record if isinstance(record, dict) else {},
            "live": links["current"] == release,
            "previous": links["previous"] == release,
            "next": links["next"] == release,
            "failed": failed if isinstance(failed, dict) else {"marker": str(failed)},
            "migrations": migrations,
        }
        releases.append(item)
        lines.append(release_line(item))
    return releases, lines


def release_line(item: dict[str, Any]) -> str:
    record = item["record"]
    marks = [name for name in ("previous", "next") if item[name]]
    parts = [("* " if item["live"] else "  ") + item["id"]]
    if marks:
        parts[0] += f" ({', '.join(marks)})"
    if record:
        who = f" by {record['who']}" if record.get("who") else ""
        parts.append(f"commit {str(record.get('commit', '?'))[:12]}{who}")
    else:
        parts.append("incomplete (no record)")
    if item["failed"]:
        parts.append(f"FAILED: {item['failed'].get('reason', 'see the marker')}")
    migrations = item["migrations"]
    parts.append(
        "migrations: " + ", ".join(migration_text(m) for m in migrations)
        if migrations
        else "no migrations"
    )
    return "; ".join(parts)


def read_state(
    cfg: Config, checked: tuple[dict[str, Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Everything the module returns; checked: the live record and target rollback_target
    already read."""
    target: dict[str, Any] = {}
    if checked:
        live, target = checked
    elif cfg.rollback:
        live, target = live_and_target(cfg)
    else:
        live = read_live(cfg)
    releases, lines = list_releases(cfg) if cfg.listing else ([], [])
    return {
        "changed": False,
        "live": live,
        "target": target,
        "releases": releases,
        "lines": lines,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app_root": {"type": "path", "required": True},
            "record": {"type": "str", "default": ".djdeploy-release.json"},
            "failed_marker": {"type": "str", "default": ".djdeploy-failed.json"},
            "migrations_file": {"type": "str", "default": ".djdeploy-migrations.json"},
            "rollback": {"type": "bool", "default": False},
            "rollback_to": {"type": "str", "default": ""},
            "host": {"type": "str"},
            "list": {"type": "bool", "default": False},
            "check": {"type": "bool", "default": False},
            "allow_migrations": {"type": "bool", "default": False},
            "manage": {"type": "str", "default": ""},
            "runtime_user": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    cfg = Config(
        app_root=Path(p["app_root"]),
        record=p["record"],
        failed_marker=p["failed_marker"],
        migrations_file=p["migrations_file"],
        rollback=p["rollback"],
        rollback_to=p["rollback_to"] or "",
        host=p["host"] or socket.gethostname(),
        listing=p["list"],
    )
    try:
        checked = None
        if p["rollback"] and p["check"]:
            checked = rollback_target(
                cfg,
                allow_migrations=p["allow_migrations"],
                manage=p["manage"],
                runtime_user=p["runtime_user"],
            )
        module.exit_json(**read_state(cfg, checked))
    except StateError as exc:
        module.fail_json(msg=exc.msg, refused=p["check"])


if __name__ == "__main__":
    main()
