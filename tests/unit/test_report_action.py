"""The djdeploy_report action (playbooks/action_plugins/djdeploy_report.py): the file it writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from .loader import load

action = load("playbooks/action_plugins/djdeploy_report.py")


def test_writes_json_atomically_and_replaces_an_old_report(tmp_path: Path) -> None:
    dest = tmp_path / "release.json"
    dest.write_text("old")
    action.write_report(dest, {"hosts": {"web1": {"switch": {"steps": []}}}, "n": 1})
    assert json.loads(dest.read_text()) == {"hosts": {"web1": {"switch": {"steps": []}}}, "n": 1}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["release.json"]


def test_a_missing_directory_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        action.write_report(tmp_path / "nope" / "release.json", {})
    assert list(tmp_path.iterdir()) == []
