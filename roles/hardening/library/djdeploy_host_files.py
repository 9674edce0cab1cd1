#!/usr/bin/python
"""Root's configuration files of a host in one call: the hardening role's local system part."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCUMENTATION = r"""
---
module: djdeploy_host_files
short_description: Write root-owned configuration files, directories, modes and settings in one call
description:
  - One call, as root, brings a set of root-owned paths to the state given, changing only what
    differs, in this order - I(directories), I(files), I(absent), I(modes), I(settings).
    Everything it changed (or would change, in check mode) is listed in C(changes).
  - Each of I(directories) is created when missing (with missing parents, root-owned, mode
    C(0755)), then owned by root and given its mode. Anything else at the path fails the call.
  - Each of I(files) is written when its content, owner or mode differ - a temporary file in the
    same directory gets the content, owner and mode, then is renamed over the file, so a reader
    sees the old or the new file, never a part. Its directory must exist.
  - Each path of I(absent) is removed when it is a file or a symlink (a directory fails).
  - Each path of I(modes) that exists gets that mode (nothing is created).
  - Each of I(settings) sets one key of a file of C(KEY VALUE) lines (login.defs) - every line
    that sets the key becomes C(KEY<tab>VALUE); without one, the last commented-out line that
    names it does; without that either, the line is appended. The file must exist; the rest of
    it is kept byte for byte.
options:
  directories:
    description: Directories to create or correct, parents first.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      mode:
        description: Octal mode as a string (C("0700")).
        type: str
        required: true
  files:
    description: Files and their whole content.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The file's content.
        type: str
        required: true
      mode:
        description: Octal mode as a string.
        type: str
        default: "0644"
  absent:
    description: Files that must not exist.
    type: list
    elements: path
    default: []
  modes:
    description: Mode (octal string) of each path, set only where the path exists.
    type: dict
    default: {}
  settings:
    description: Keys of C(KEY VALUE) files.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file (it must exist).
        type: path
        required: true
      key:
        description: The key, e.g. C(PASS_MAX_DAYS).
        type: str
        required: true
      value:
        description: Its value, as a string.
        type: str
        required: true
author: djdeploy maintainers
"""

EXAMPLES = r"""
- name: Core dumps off, cron root's only, an age limit on passwords
  djdeploy_host_files:
    directories:
      - {path: /etc/cron.d, mode: "0700"}
    files:
      - path: /etc/security/limits.d/60-hardening.conf
        content: "* hard core 0\n"
    absent: [/etc/profile.d/60-timeout.sh]
    modes:
      /etc/crontab: "0600"
    settings:
      - {path: /etc/login.defs, key: PASS_MAX_DAYS, value: "365"}
"""

RETURN = r"""
changes:
  description: What changed (or would change in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["created /etc/cron.d", "mode 0700 /etc/cron.d", "wrote /etc/issue"]
"""

Chown = Callable[[str, int, int], None]


class HostFilesError(Exception):
    """A path the module cannot bring to the state asked for (the message names it)."""


def parse_mode(text: Any, where: str) -> int:
    """An octal mode string ("0644") as an int; anything else names the path."""
    if not isinstance(text, str) or not re.fullmatch(r"0?[0-7]{3,4}", text):
        raise HostFilesError(f'{where}: mode must be an octal string such as "0644" (got {text!r})')
    return int(text, 8)


@dataclass
class HostFiles:
    """Applies the requested state; ``chown`` and ``check_mode`` are injectable for tests."""

    check_mode: bool = False
    chown: Chown = os.chown
    changes: list[str] = field(default_factory=list)

    def _note(self, change: str) -> None:
        self.changes.append(change)

    def _owner_and_mode(self, path: Path, mode: int, info: os.stat_result) -> None:
        if info.st_uid != 0 or info.st_gid != 0:
            self._note(f"owner root:root {path}")
            if not self.check_mode:
                self.chown(str(path), 0, 0)
        if stat.S_IMODE(info.st_mode) != mode:
            self._note(f"mode {mode:04o} {path}")
            if not self.check_mode:
                path.chmod(mode)

    def directory(self, path: Path, mode: int) -> None:
        """Create the directory (and missing parents, root's, 0755), then owner and mode."""
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise HostFilesError(f"{path}: exists and is not a directory")
        if not path.exists():
            self._note(f"created {path}")
            if self.check_mode:
                return
            missing = [p for p in reversed(path.parents) if not p.exists()]
            for parent in missing:
                parent.mkdir(mode=0o755)
                self.chown(str(parent), 0, 0)
            path.mkdir(mode=mode)
            self.chown(str(path), 0, 0)
            path.chmod(mode)
            return
        self._owner_and_mode(path, mode, path.stat())

    def file(self, path: Path, content: str, mode: int) -> None:
        """Write the file atomically when its content, owner or mode differ."""
        if not path.parent.is_dir():
            raise HostFilesError(f"{path}: its directory does not exist")
        data = content.encode()
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise HostFilesError(f"{path}: exists and is not a regular file")
        if path.exists():
            info = path.stat()
            if path.read_bytes() == data:
                self._owner_and_mode(path, mode, info)
                return
        self._note(f"wrote {path}")
        if self.check_mode:
            return
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            self.chown(temporary, 0, 0)
            Path(temporary).chmod(mode)
            Path(temporary).replace(path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def absent(self, path: Path) -> None:
        """Remove the file or symlink."""
        if path.is_dir() and not path.is_symlink():
            raise HostFilesError(f"{path}: is a directory (absent removes files only)")
        if path.exists() or path.is_symlink():
            self._note(f"removed {path}")
            if not self.check_mode:
                path.unlink()

    def mode(self, path: Path, mode: int) -> None:
        """Set the mode of an existing path; a missing one is left missing."""
        if path.exists():
            info = path.stat()
            if stat.S_IMODE(info.st_mode) != mode:
                self._note(f"mode {mode:04o} {path}")
                if not self.check_mode:
                    path.chmod(mode)

    def setting(self, path: Path, key: str, value: str) -> None:
        """KEY<tab>VALUE on every line that sets the key, else on the last commented-out line
        that names it, else appended."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise HostFilesError(f"{path}: {key!r} is not a setting name")
        if not path.is_file():
            raise HostFilesError(f"{path}: does not exist")
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        wanted = f"{key}\t{value}\n"
        active = re.compile(rf"^\s*{re.escape(key)}\s")
        commented = re.compile(rf"^#\s*{re.escape(key)}\s")
        targets = [i for i, line in enumerate(lines) if active.match(line)]
        if not targets:
            targets = [i for i, line in enumerate(lines) if commented.match(line)][-1:]
        if targets and all(lines[i] == wanted for i in targets):
            return
        if targets:
            for index in targets:
                lines[index] = wanted
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(wanted)
        self._note(f"set {key} in {path}")
        if self.check_mode:
            return
        info = path.stat()
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w") as out:
                out.write("".join(lines))
            self.chown(temporary, info.st_uid, info.st_gid)
            Path(temporary).chmod(stat.S_IMODE(info.st_mode))
            Path(temporary).replace(path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _absolute(value: Any, option: str) -> Path:
    path = Path(str(value))
    if not path.is_absolute():
        raise HostFilesError(f"{option}: {value!r} is not an absolute path")
    return path


def run(params: dict[str, Any], check_mode: bool, chown: Chown = os.chown) -> list[str]:
    """Apply the module's options in their documented order; the list of changes."""
    host = HostFiles(check_mode=check_mode, chown=chown)
    for entry in params.get("directories") or []:
        path = _absolute(entry["path"], "directories")
        host.directory(path, parse_mode(entry["mode"], str(path)))
    for entry in params.get("files") or []:
        path = _absolute(entry["path"], "files")
        host.file(path, str(entry["content"]), parse_mode(entry.get("mode") or "0644", str(path)))
    for value in params.get("absent") or []:
        host.absent(_absolute(value, "absent"))
    for name, mode in (params.get("modes") or {}).items():
        path = _absolute(name, "modes")
        host.mode(path, parse_mode(mode, str(path)))
    for entry in params.get("settings") or []:
        host.setting(_absolute(entry["path"], "settings"), entry["key"], str(entry["value"]))
    return host.changes


def main() -> None:  # pragma: no cover - exercised by the Molecule scenarios
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "mode": {"type": "str", "required": True},
                },
            },
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "content": {"type": "str", "required": True},
                    "mode": {"type": "str", "default": "0644"},
                },
            },
            "absent": {"type": "list", "elements": "path", "default": []},
            "modes": {"type": "dict", "default": {}},
            "settings": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "key": {"type": "str", "required": True, "no_log": False},
                    "value": {"type": "str", "required": True},
                },
            },
        },
        supports_check_mode=True,
    )
    try:
        changes = run(module.params, module.check_mode)
    except (HostFilesError, OSError) as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
