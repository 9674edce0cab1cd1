"""Every module's documentation parses as ansible-doc reads it (with the shared fragments of
playbooks/doc_fragments), and documents the options its argument spec takes where the spec is
shared (the lock option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .loader import load

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = sorted({p.parent for p in ROOT.glob("roles/*/library/*.py")})
MODULES = sorted(p.stem for lib in LIBRARIES for p in lib.glob("*.py"))


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    done = subprocess.run(
        [str(ansible_doc), "-M", ":".join(map(str, LIBRARIES)), "--json", *MODULES],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.mark.parametrize("module", MODULES)
def test_the_documentation_parses(docs: dict[str, Any], module: str) -> None:
    doc = docs[module]["doc"]
    assert doc["module"] == module
    assert doc["short_description"] and doc["options"]
    assert docs[module]["examples"] and docs[module]["return"] is not None


@pytest.mark.parametrize("module", ["djdeploy_layout", "djdeploy_switch"])
def test_the_lock_option_is_documented_as_the_spec_takes_it(
    docs: dict[str, Any], module: str
) -> None:
    spec = load("roles/release/module_utils/djdeploy_lock_lib.py").LOCK_OPTION_SPEC
    documented = docs[module]["doc"]["options"]["lock"]["suboptions"]
    assert sorted(documented) == sorted(spec["options"])
