"""Action djdeploy_report: write a run's report as JSON on the controller, in-process.

The summary play writes the run's report with it when ``djdeploy_report_file`` is set (CI,
``make bench``). ``ansible.builtin.copy`` delegated to localhost would run two modules in
fresh interpreters (about a second); this writes the file from the controller's own process,
atomically (a temporary file in the same directory, then a rename).

Arguments: ``dest`` (path on the controller) and ``content`` (any JSON-serialisable data).
The task reports no change: the report describes the run, it does not change a host.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
---
module: djdeploy_report
short_description: Write a run's report as JSON on the controller
description:
  - Writes I(content) as indented JSON to I(dest) on the controller, atomically. Runs in the
    controller's own process (an action without a module); nothing runs on the host.
options:
  dest:
    description: The file to write (its directory must exist).
    type: path
    required: true
  content:
    description: The data to write.
    type: raw
    required: true
author: djdeploy maintainers
"""


def write_report(dest: Path, content: Any) -> None:
    """Write content as JSON to dest, atomically, mode 0644."""
    text = json.dumps(content, indent=2, sort_keys=True, default=str) + "\n"
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        temporary.chmod(0o644)
        temporary.replace(dest)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class ActionModule(ActionBase):  # type: ignore[misc]
    """See the module docstring."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = self._task.args
        dest = args.get("dest")
        if not dest or "content" not in args:
            return {**result, "failed": True, "msg": "djdeploy_report needs dest and content"}
        try:
            write_report(Path(str(dest)).expanduser(), args["content"])
        except (OSError, TypeError, ValueError) as exc:
            return {**result, "failed": True, "msg": f"cannot write the report {dest}: {exc}"}
        return {**result, "changed": False, "dest": str(dest)}
