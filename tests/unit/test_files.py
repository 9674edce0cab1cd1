"""Unit tests of roles/release/module_utils/djdeploy_files.py (atomic files and links).

The build, the migrations, the layout and the switch write through it; how they own and name
what they write is tested in their own test files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .loader import load

files = load("roles/release/module_utils/djdeploy_files.py")


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".djdeploy-tmp")]


def test_write_atomic_replaces_the_file_by_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old\n")
    reader = path.open()
    inode = path.stat().st_ino
    files.write_atomic(path, "new é\n", 0o640)
    assert path.read_bytes() == "new é\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode and reader.read() == "old\n"
    reader.close()
    files.write_atomic(path, b"\x00bytes", 0o600)
    assert path.read_bytes() == b"\x00bytes"
    assert leftovers(tmp_path) == []


def test_the_owner_is_set_on_the_temporary_file_before_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "live-color"
    seen: list[tuple[str, int, bool, int]] = []

    def own(tmp: Path, fd: int) -> None:
        info = os.fstat(fd)
        seen.append((tmp.name, stat.S_IMODE(info.st_mode), tmp.exists(), info.st_size))

    files.write_atomic(path, "blue\n", 0o644, own=own)
    ((name, mode, existed, size),) = seen
    assert name.startswith(".live-color.") and name.endswith(".djdeploy-tmp")
    assert (mode, existed, size) == (0o600, True, 5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_symlink_is_replaced_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "record.json"
    path.symlink_to(victim)
    files.write_atomic(path, "[]\n", 0o640)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and path.read_text() == "[]\n"


def test_a_temporary_name_that_exists_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    trap = tmp_path / ".f.trap.djdeploy-tmp"
    trap.symlink_to(victim)
    monkeypatch.setattr(files, "temporary_name", lambda path: trap)
    with pytest.raises(FileExistsError):
        files.write_atomic(tmp_path / "f", "x", 0o644)
    assert victim.read_text() == "keep me" and trap.is_symlink()
    assert not (tmp_path / "f").exists()


def test_a_failure_removes_the_temporary_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\n")

    def refuse(tmp: Path, fd: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(tmp))

    with pytest.raises(PermissionError):
        files.write_atomic(path, "A=2\n", 0o640, own=refuse)
    assert path.read_text() == "A=1\n" and leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        files.write_atomic(tmp_path / "missing" / "f", "x", 0o640)


def test_replace_symlink_points_the_link_at_its_new_target(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    link = tmp_path / "current"
    files.replace_symlink(link, old)
    assert link.readlink() == old
    files.replace_symlink(link, new)
    assert link.readlink() == new and old.is_dir()
    assert leftovers(tmp_path) == []


def test_replace_symlink_removes_its_temporary_link_when_the_rename_fails(tmp_path: Path) -> None:
    link = tmp_path / "current"
    (link / "inside").mkdir(parents=True)  # a directory that is not empty: rename refuses
    with pytest.raises(OSError):
        files.replace_symlink(link, tmp_path / "new")
    assert link.is_dir() and not link.is_symlink()
    assert leftovers(tmp_path) == []


def test_remove_path_removes_anything_and_never_follows_a_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub/file").write_text("x")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "file").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(kept)
    plain = tmp_path / "plain"
    plain.write_text("x")
    for path in (tree, link, plain, tmp_path / "missing"):
        files.remove_path(path)
        assert not path.exists() and not path.is_symlink()
    assert (kept / "file").read_text() == "x"


def test_lchown_changes_the_link_itself(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    # Its own ids: allowed without root, and the call must not follow the link.
    files.lchown(link, os.getuid(), os.getgid())
    assert link.lstat().st_uid == os.getuid() and link.is_symlink()
