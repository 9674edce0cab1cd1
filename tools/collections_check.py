"""Which Ansible collections the code uses, and whether each is listed and installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Part of ansible-core itself: never listed in requirements.yml.
CORE = {"ansible.builtin", "ansible.legacy"}
FQCN_RE = re.compile(r"(?<![\w./-])([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\b")
INVENTORY_DIRS = {"inventories", "group_vars", "host_vars"}
SKIP_DIRS = {".venv", ".cache", ".git", "node_modules", "__pycache__"}


def project_files() -> Iterator[Path]:
    """YAML, Jinja templates and ansible.cfg files of the project."""
    for path in ROOT.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and (
            path.suffix in {".yml", ".yaml", ".j2"} or path.name == "ansible.cfg"
        ):
            yield path


def task_keys(node: Any) -> Iterator[str]:
    """Every mapping key in a YAML document that looks like a module FQCN."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.count(".") == 2:
                yield key
            yield from task_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from task_keys(item)


def used_collections(
    namespaces: Iterable[str], files: Iterable[Path] | None = None
) -> dict[str, set[str]]:
    """Map collection -> files using it.

    Module keys with three dotted parts always count; other dotted names in text
    (lookups, filters, callbacks) count when their namespace is a known collection namespace.
    """
    known = set(namespaces) | {"ansible"}
    found: dict[str, set[str]] = {}
    for path in files if files is not None else project_files():
        text = path.read_text(errors="replace")
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        names: set[str] = set()
        # Inventories map host names (dotted) to values: only the text scan applies there.
        is_inventory = any(part in INVENTORY_DIRS for part in Path(rel).parts)
        if path.suffix in {".yml", ".yaml"} and not is_inventory:
            try:
                for doc in yaml.safe_load_all(text):
                    names.update(".".join(k.split(".")[:2]) for k in task_keys(doc))
            except yaml.YAMLError:
                pass  # vault files and templates: the text scan below still applies
        for match in FQCN_RE.finditer(text):
            if match.group(1) in known:
                names.add(f"{match.group(1)}.{match.group(2)}")
        for name in names - CORE:
            found.setdefault(name, set()).add(rel)
    return found


def required_collections(path: Path | None = None) -> set[str]:
    data = yaml.safe_load((path or ROOT / "requirements.yml").read_text()) or {}
    return {
        item["name"] if isinstance(item, dict) else str(item)
        for item in data.get("collections", [])
    }


def installed_collections() -> set[str]:
    beside = Path(sys.executable).parent / "ansible-galaxy"
    galaxy = str(beside) if beside.exists() else shutil.which("ansible-galaxy") or "ansible-galaxy"
    out = subprocess.run(
        [galaxy, "collection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    data: dict[str, dict[str, Any]] = json.loads(out)
    return {name for per_path in data.values() for name in per_path}


def problems() -> list[str]:
    installed = installed_collections()
    namespaces = {name.split(".")[0] for name in installed}
    used = used_collections(namespaces)
    required = required_collections()
    issues = []
    for name, files in sorted(used.items()):
        where = ", ".join(sorted(files)[:3])
        if name not in required:
            issues.append(f"{name} is used ({where}) but not listed in requirements.yml")
        if name not in installed:
            issues.append(f"{name} is used ({where}) but not installed; run `make setup`")
    return issues
