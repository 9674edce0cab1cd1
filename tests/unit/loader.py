"""Load a module or plugin of the repository by its path (they are not importable packages).

A role's modules import the role's own module_utils as ``ansible.module_utils.<name>`` (Ansible
ships ``roles/<role>/module_utils/<name>.py`` with them); ``load`` registers those files under
that name first, so the import finds them. Loading a module_utils file itself gives the same
registered module (one ``ProjectError`` class, whoever raises or catches it).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
UTILS = "ansible.module_utils"


def _exec(path: Path, name: str) -> ModuleType:
    """Import path under name (dataclasses need the module in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _util(path: Path) -> ModuleType:
    """A role's module_utils file as ansible.module_utils.<stem>, loaded once, after the
    module_utils of its role that it imports."""
    name = f"{UTILS}.{path.stem}"
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__file__", None) == str(path):
        return known
    source = path.read_text()
    for util in sorted(path.parent.glob("*.py")):
        if util != path and f"{UTILS}.{util.stem} import" in source:
            _util(util)
    return _exec(path, name)


def load(relative: str) -> ModuleType:
    """Import ROOT/relative: a module_utils file under its Ansible name, anything else under
    its file name, after the role's module_utils it imports."""
    path = ROOT / relative
    if path.parent.name == "module_utils":
        return _util(path)
    utils = path.parent.parent / "module_utils"
    if path.parent.name == "library" and utils.is_dir():
        source = path.read_text()
        for util in sorted(utils.glob("*.py")):
            if f"{UTILS}.{util.stem}" in source:
                _util(util)
    return _exec(path, path.stem)


def run_module(
    relative: str, args: dict[str, Any], workdir: Path
) -> tuple[int, dict[str, Any], str]:
    """Run the module at ROOT/relative as Ansible does: a process of its own, the arguments in a
    file (written in workdir), the role's module_utils importable as ansible.module_utils.<name>.
    Returns the exit code, the JSON result and everything the process printed."""
    args_file = workdir / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    bootstrap = (
        "import sys; from tests.unit.loader import load;"
        f" module = load({relative!r});"
        f" sys.argv = [module.__file__, {str(args_file)!r}]; module.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", bootstrap], capture_output=True, text=True, check=False, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, result, done.stdout + done.stderr
