"""The read-only release state module (roles/release/library/djdeploy_releases.py) on temp trees.

A host's app root is a temporary directory: releases with their records, migration lists and
failure markers, and the current and previous links.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .loader import load

rs = load("roles/release/library/djdeploy_releases.py")

R1 = "20260101T000000Z-aaaaaaaa"
R2 = "20260102T000000Z-bbbbbbbb"
R3 = "20260103T000000Z-cccccccc"
R4 = "20260104T000000Z-dddddddd"
RECORD = ".djdeploy-release.json"
FAILED = ".djdeploy-failed.json"
MIGRATIONS = ".djdeploy-migrations.json"


def make_release(root: Path, release: str, migrations: list[str] | None = None) -> Path:
    path = root / "releases" / release
    path.mkdir(parents=True)
    (path / RECORD).write_text(json.dumps({"id": release, "commit": release[-8:] * 5}))
    if migrations is not None:
        (path / MIGRATIONS).write_text(json.dumps(migrations) + "\n")
    return path


def link(root: Path, name: str, release: str) -> None:
    (root / name).symlink_to(root / "releases" / release)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """R1 (initial migrations), R2, R3 (one migration), R4 (two) live, previous -> R3."""
    app = tmp_path / "srv/demo"
    make_release(app, R1, ["greetings.0001_initial"])
    make_release(app, R2)
    make_release(app, R3, ["greetings.0003_third"])
    make_release(app, R4, ["greetings.0004_fourth", "shop.0002_price"])
    link(app, "current", R4)
    link(app, "previous", R3)
    return app


def state(root: Path, **options: Any) -> dict[str, Any]:
    result: dict[str, Any] = rs.read_state(rs.Config(app_root=root, host="web1", **options))
    return result


def test_reads_the_live_record(root: Path) -> None:
    result = state(root)
    assert result["live"]["id"] == R4
    assert result["target"] == {}
    assert result["changed"] is False


def test_no_live_release_is_an_empty_record(tmp_path: Path) -> None:
    assert state(tmp_path / "srv/none")["live"] == {}
    app = tmp_path / "srv/dangling"
    app.mkdir(parents=True)
    (app / "current").symlink_to(app / "releases/gone")
    assert state(app)["live"] == {}


def test_an_unreadable_record_fails(root: Path) -> None:
    (root / "releases" / R4 / RECORD).write_text("{not json")
    with pytest.raises(rs.StateError) as failed:
        state(root)
    assert f"cannot read {root}/current/{RECORD}" in failed.value.msg


def test_previous_is_the_default_target(root: Path) -> None:
    target = state(root, rollback=True)["target"]
    assert target["id"] == R3
    assert target["path"] == f"{root}/previous"
    assert target["exists"] and not target["live"] and not target["failed"]
    # Only R4 came after R3, up to the live R4.
    assert target["applied_migrations"] == ["greetings.0004_fourth", "shop.0002_price"]


def test_migrations_after_the_target_in_id_order(root: Path) -> None:
    target = state(root, rollback=True, rollback_to=R1)["target"]
    assert target["path"] == f"{root}/releases/{R1}"
    # R1's own migrations do not count; R2 applied none; then R3 and R4, in id order.
    assert target["applied_migrations"] == [
        "greetings.0003_third",
        "greetings.0004_fourth",
        "shop.0002_price",
    ]


def test_releases_newer_than_the_live_one_do_not_count(root: Path) -> None:
    """After a rollback to R2, rolling back to R1 counts R2 only, not R3 or R4."""
    (root / "current").unlink()
    link(root, "current", R2)
    target = state(root, rollback=True, rollback_to=R1)["target"]
    assert target["applied_migrations"] == []
    # Rolling forward again to R4 from R2 crosses nothing either.
    assert state(root, rollback=True, rollback_to=R4)["target"]["applied_migrations"] == []


def test_the_live_release_is_flagged(root: Path) -> None:
    target = state(root, rollback=True, rollback_to=R4)["target"]
    assert target["exists"] and target["live"]


def test_a_failed_release_is_flagged(root: Path) -> None:
    (root / "releases" / R2 / FAILED).write_text("{}")
    target = state(root, rollback=True, rollback_to=R2)["target"]
    assert target["failed"] and not target["live"]
    assert target["path"] == f"{root}/releases/{R2}"


@pytest.mark.parametrize("rollback_to", ["20990101T000000Z-ffffffff", "../shared", ".", ".."])
def test_a_missing_or_odd_target_does_not_exist(root: Path, rollback_to: str) -> None:
    (root / "shared").mkdir()
    target = state(root, rollback=True, rollback_to=rollback_to)["target"]
    assert not target["exists"] and not target["live"] and not target["failed"]
    assert target["applied_migrations"] == []


def test_no_previous_link_means_no_target(root: Path) -> None:
    (root / "previous").unlink()
    target = state(root, rollback=True)["target"]
    assert target["id"] == "" and not target["exists"]


def test_a_dangling_previous_link_names_its_release(root: Path) -> None:
    (root / "previous").unlink()
    (root / "previous").symlink_to(root / "releases/20251231T000000Z-eeeeeeee")
    target = state(root, rollback=True)["target"]
    assert target["id"] == "20251231T000000Z-eeeeeeee" and not target["exists"]


def test_rollback_without_a_live_release_fails(tmp_path: Path) -> None:
    with pytest.raises(rs.StateError) as failed:
        state(tmp_path / "srv/none", rollback=True)
    assert "no live release on web1" in failed.value.msg


def test_a_broken_migrations_file_fails(root: Path) -> None:
    (root / "releases" / R4 / MIGRATIONS).write_text('{"not": "a list"}')
    with pytest.raises(rs.StateError) as failed:
        state(root, rollback=True)
    assert "is not a list of migrations" in failed.value.msg


def test_nothing_is_written(root: Path) -> None:
    before = sorted(str(p) for p in root.rglob("*"))
    state(root, rollback=True, rollback_to=R1)
    assert sorted(str(p) for p in root.rglob("*")) == before


NEW_ENTRY = {
    "name": "greetings.0005_remove_greeting_text",
    "reversible": False,
    "unsafe": ["RemoveField: Remove field text from greeting (unsafe)"],
    "allowed_by": "release_allow_unsafe_migrations_list",
}


def test_records_with_entries_count_like_names(root: Path) -> None:
    r5 = "20260105T000000Z-eeeeeeee"
    make_release(root, r5)
    (root / "releases" / r5 / MIGRATIONS).write_text(json.dumps([NEW_ENTRY]))
    (root / "current").unlink()
    link(root, "current", r5)
    target = state(root, rollback=True, rollback_to=R3)["target"]
    assert target["applied_migrations"] == [
        "greetings.0004_fourth",
        "shop.0002_price",
        "greetings.0005_remove_greeting_text",
    ]
    # Older records know names only: reversible unknown (None).
    assert [(m["release"], m["reversible"]) for m in target["applied"]] == [
        (R4, None),
        (R4, None),
        (r5, False),
    ]
    assert target["applied"][-1]["allowed_by"] == "release_allow_unsafe_migrations_list"


def test_list_shows_every_release_with_its_migrations(root: Path) -> None:
    r5 = "20260105T000000Z-eeeeeeee"
    make_release(root, r5)
    (root / "releases" / r5 / MIGRATIONS).write_text(json.dumps([NEW_ENTRY]))
    (root / "releases" / r5 / FAILED).write_text(json.dumps({"reason": "migrate failed"}))
    link(root, "next", r5)
    (root / "releases" / "20260106T000000Z-ffffffff").mkdir()
    result = state(root, listing=True)
    releases = result["releases"]
    assert [r["id"] for r in releases] == [R1, R2, R3, R4, r5, "20260106T000000Z-ffffffff"]
    assert [r["id"] for r in releases if r["live"]] == [R4]
    assert releases[2]["previous"] and releases[4]["next"]
    assert releases[4]["failed"] == {"reason": "migrate failed"}
    assert releases[4]["migrations"][0]["reversible"] is False
    lines = result["lines"]
    assert lines[0] == (
        f"  {R1}; commit aaaaaaaaaaaa; migrations: greetings.0001_initial (reversible?)"
    )
    assert lines[1] == f"  {R2}; commit bbbbbbbbbbbb; no migrations"
    assert lines[2].startswith(f"  {R3} (previous); ")
    assert lines[3].startswith(f"* {R4}; ")
    assert lines[4] == (
        f"  {r5} (next); commit eeeeeeeeeeee; FAILED: migrate failed; migrations:"
        " greetings.0005_remove_greeting_text (irreversible, unsafe allowed by"
        " release_allow_unsafe_migrations_list: RemoveField: Remove field text from greeting"
        " (unsafe))"
    )
    assert lines[5] == "  20260106T000000Z-ffffffff; incomplete (no record); no migrations"


def test_without_list_nothing_is_listed(root: Path) -> None:
    result = state(root)
    assert (result["releases"], result["lines"]) == ([], [])


# The rollback's refusals (module_utils/djdeploy_releases_lib.py): djdeploy_switch checks them
# in its own call, djdeploy_releases with check=true before a host leaves the rotation. -----

lib = load("roles/release/module_utils/djdeploy_releases_lib.py")


def refusal(root: Path, allow: bool = False, **options: Any) -> str:
    try:
        lib.rollback_target(
            rs.Config(app_root=root, host="web1", rollback=True, **options),
            allow_migrations=allow,
            manage="/usr/local/bin/demo-manage",
            runtime_user="demo",
        )
    except rs.StateError as exc:
        return str(exc.msg)
    return ""


def test_rollback_refusals_name_the_reason_and_the_way_out(root: Path) -> None:
    # Previous (R3) is behind R4, which applied two migrations.
    past = refusal(root)
    assert "releases after " + R3 + " up to the live " + R4 + " applied migrations" in past
    assert "greetings.0004_fourth, shop.0002_price" in past
    assert "release_rollback_allow_migrations=true" in past
    assert "sudo -u demo /usr/local/bin/demo-manage migrate" in past
    assert refusal(root, allow=True) == ""
    assert "is already live on web1" in refusal(root, rollback_to=R4)
    assert "release 20990101T000000Z-ffffffff does not exist" in refusal(
        root, rollback_to="20990101T000000Z-ffffffff"
    )
    (root / "releases" / R2 / FAILED).write_text("{}")
    assert f"{R2} failed its switch before" in refusal(root, rollback_to=R2, allow=True)
    (root / "previous").unlink()
    assert "no previous release is recorded" in refusal(root)


def test_a_rollback_without_a_live_release_is_refused(tmp_path: Path) -> None:
    assert "no live release on web1" in refusal(tmp_path / "srv/none")


def test_the_checked_rollback_target_is_returned_without_reading_it_again(root: Path) -> None:
    cfg = rs.Config(app_root=root, host="web1", rollback=True)
    checked = lib.rollback_target(
        cfg, allow_migrations=True, manage="/usr/local/bin/demo-manage", runtime_user="demo"
    )
    # The module passes what the check read; read_state reads neither the record nor the links.
    (root / "previous").unlink()
    state = rs.read_state(cfg, checked)
    assert (state["live"], state["target"]) == checked
    assert state["target"]["id"] == R3
    assert "no previous release is recorded" in refusal(root)
