"""The live release's record (<app_root>/current/<record>), read the same way by every module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RecordError(Exception):
    """The record exists but cannot be used; the message says which file and why."""


def read_json(path: Path) -> Any:
    """A JSON file's content; RecordError names the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"release: cannot read {path}: {exc}") from exc


def read_live_record(app_root: Path, record: str) -> dict[str, Any]:
    """The live release's record; empty when there is no live release (no current or record)."""
    path = app_root / "current" / record
    if not path.exists():
        return {}
    found = read_json(path)
    if not isinstance(found, dict) or not isinstance(found.get("id"), str):
        raise RecordError(f"release: {path} is not a release record (no id)")
    return found
