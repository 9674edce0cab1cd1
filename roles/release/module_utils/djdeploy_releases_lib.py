"""A host's releases as the records say: the live release, a rollback's target and what the
releases after it migrated. Read-only; shared by djdeploy_releases (playbooks/releases.yml) and
djdeploy_switch (a rollback resolves and checks its target in its own call)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_migration_safety import record_names
    from djdeploy_record import RecordError, read_json, read_live_record
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_migration_safety import record_names
    from ansible.module_utils.djdeploy_record import RecordError, read_json, read_live_record


class StateError(Exception):
    """The host's release state cannot be read."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


@dataclass
class Config:
    """What to read (the module's options)."""

    app_root: Path
    record: str = ".djdeploy-release.json"
    failed_marker: str = ".djdeploy-failed.json"
    migrations_file: str = ".djdeploy-migrations.json"
    rollback: bool = False
    rollback_to: str = ""
    host: str = ""
    listing: bool = False


def read_json_state(path: Path) -> Any:
    """A JSON file of the release tree (StateError when it cannot be read)."""
    try:
        return read_json(path)
    except RecordError as exc:
        raise StateError(str(exc)) from exc


def read_live(cfg: Config) -> dict[str, Any]:
    """The live release's record; empty when there is no live release (no current or record)."""
    try:
        return read_live_record(cfg.app_root, cfg.record)
    except RecordError as exc:
        raise StateError(str(exc)) from exc


def valid_id(release: str) -> bool:
    return bool(release) and "/" not in release and release not in (".", "..")


def release_ids(releases: Path) -> list[str]:
    try:
        return sorted(e.name for e in releases.iterdir() if not e.name.startswith("."))
    except FileNotFoundError:
        return []


def read_applied(path: Path, release: str) -> list[dict[str, Any]]:
    """The entries of a migrations record (a list of names from older releases, or of entries
    with name, reversible, unsafe, allowed_by); empty when the file is missing."""
    if not path.is_file():
        return []
    applied = read_json_state(path)
    if record_names(applied) is None:
        raise StateError(f"release: {path} is not a list of migrations")
    entries: list[dict[str, Any]] = []
    for item in applied:
        entry = {"name": item} if isinstance(item, str) else dict(item)
        entries.append(
            {
                "name": entry["name"],
                "release": release,
                "reversible": entry.get("reversible"),
                "unsafe": list(entry.get("unsafe") or []),
                "allowed_by": entry.get("allowed_by", ""),
            }
        )
    return entries


def applied_between(releases: Path, after: str, upto: str, name: str) -> list[dict[str, Any]]:
    """Migrations applied by the releases with after < id <= upto, in id order."""
    found: list[dict[str, Any]] = []
    for release in release_ids(releases):
        if after < release <= upto:
            found.extend(read_applied(releases / release / name, release))
    return found


def resolve_target(cfg: Config, live: dict[str, Any]) -> dict[str, Any]:
    """The rollback target: rollback_to, else where the previous link points."""
    root = cfg.app_root
    if cfg.rollback_to:
        path = root / "releases" / cfg.rollback_to
        release = cfg.rollback_to if valid_id(cfg.rollback_to) else ""
    else:
        path = root / "previous"
        release = path.readlink().name if path.is_symlink() else ""
    directory = root / "releases" / release
    exists = valid_id(release) and directory.is_dir()
    live_id = str(live.get("id", ""))
    target: dict[str, Any] = {
        "id": release,
        "path": str(path),
        "exists": exists,
        "live": exists and release == live_id,
        "failed": exists and (directory / cfg.failed_marker).exists(),
        "applied_migrations": [],
    }
    target["applied"] = []
    if exists:
        applied = applied_between(root / "releases", release, live_id, cfg.migrations_file)
        target["applied"] = applied
        target["applied_migrations"] = [entry["name"] for entry in applied]
    return target


def rollback_refusal(
    cfg: Config,
    live: dict[str, Any],
    target: dict[str, Any],
    *,
    allow_migrations: bool,
    manage: str,
    runtime_user: str,
) -> str:
    """Why a rollback to target must not go ahead ("" when it may): no such release, it is
    the live one, it failed its switch before, or releases after it applied migrations (unless
    allow_migrations)."""
    where = cfg.host or "this host"
    if not target.get("exists"):
        if cfg.rollback_to:
            missing = f"release {cfg.rollback_to} does not exist"
        elif target.get("id"):
            missing = f"the previous release {target['id']} does not exist"
        else:
            missing = "no previous release is recorded"
        return (
            f"release: no release to roll back to on {where} ({missing}). Kept releases are in"
            f" {cfg.app_root}/releases."
        )
    if target.get("live"):
        return f"release: {target['id']} is already live on {where}; nothing to roll back."
    if target.get("failed"):
        return (
            f"release: {target['id']} failed its switch before (see"
            f" {target['path']}/{cfg.failed_marker}); it was never live. Pick another one with"
            " -e release_rollback_to=<id> (playbooks/releases.yml lists them)."
        )
    applied = list(target.get("applied_migrations") or [])
    if applied and not allow_migrations:
        return (
            f"release: releases after {target['id']} up to the live {live.get('id', '?')} applied"
            f" migrations {', '.join(applied)}. Rolling back to {target['id']} runs code that does"
            " not know them (the schema stays as it is). Re-run with"
            " -e release_rollback_allow_migrations=true if that code copes, or reverse them first"
            f" (sudo -u {runtime_user} {manage} migrate <app> <migration>)."
        )
    return ""


def live_and_target(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The live record and the rollback's target (not yet checked), or StateError when no
    release is live."""
    live = read_live(cfg)
    if not live:
        where = f" on {cfg.host}" if cfg.host else ""
        raise StateError(
            f"release: no live release{where} ({cfg.app_root}/current/{cfg.record} is"
            " missing); nothing to roll back."
        )
    return live, resolve_target(cfg, live)


def rollback_target(
    cfg: Config, *, allow_migrations: bool, manage: str, runtime_user: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The live record and the rollback's target, or StateError naming why not."""
    live, target = live_and_target(cfg)
    refusal = rollback_refusal(
        cfg,
        live,
        target,
        allow_migrations=allow_migrations,
        manage=manage,
        runtime_user=runtime_user,
    )
    if refusal:
        raise StateError(refusal)
    return live, target
