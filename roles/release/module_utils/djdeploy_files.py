"""Files and links the role's modules replace atomically, the same way in every module.

A file is written under a new temporary name in its directory (created exclusively, never
through a symlink, mode 0600 until done), given its owner and mode, synced, then renamed over
the old one: a reader sees the old file or the new one, never a part. A link is replaced the
same way (a new link renamed over the old one). A failure removes the temporary entry.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

# chown(path, uid, gid): never follows a symlink.
Chown = Callable[[Path, int, int], None]
# own(temporary, fd): gives the temporary file its owner, before its mode is set.
Own = Callable[[Path, int], None]


def lchown(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)


def temporary_name(path: Path) -> Path:
    """A new name beside path for its replacement (hidden, random, recognisable)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.djdeploy-tmp")


def write_atomic(path: Path, content: str | bytes, mode: int, own: Own | None = None) -> None:
    """Replace path by a file holding content (text is written as UTF-8) with mode.

    The temporary file is created exclusively without following a symlink (O_EXCL,
    O_NOFOLLOW), mode 0600; own(temporary, fd), when given, sets its owner; then its mode is
    set, its data synced, and it is renamed over path (a symlink at path is replaced, never
    followed). Any failure removes the temporary file and raises (OSError from the system).
    """
    data = content.encode() if isinstance(content, str) else content
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            if own is not None:
                own(tmp, out.fileno())
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_symlink(link: Path, target: Path) -> None:
    """Point link at target atomically (a new link renamed over the old one)."""
    tmp = temporary_name(link)
    tmp.symlink_to(target)
    try:
        tmp.replace(link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_path(path: Path) -> None:
    """Remove a path, whatever it is (a link itself, never what it points at); none is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
