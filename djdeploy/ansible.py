"""Running Ansible's commands for the CLI: the environment, playbook command lines, and the
results of a run made with the JSON stdout callback."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from djdeploy import PROJECT

# A run whose results the CLI reads prints them as one JSON document (ansible.posix.json);
# other callbacks (the project's profile_tasks) may print after it.
JSON_ENV = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}


def environment(base: Mapping[str, str], vault_password_file: str | None) -> dict[str, str]:
    """The environment of every Ansible command the CLI runs: the project's ansible.cfg (unless
    the caller chose one), no colors, the vault password file when given."""
    env = dict(base)
    # Ansible's commands from the CLI's own venv first (a venv's bin/ need not be on PATH).
    bindir = Path(sys.executable).parent
    if (bindir / "ansible-playbook").exists():
        env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", os.defpath)])
    env.setdefault("ANSIBLE_CONFIG", str(PROJECT / "ansible.cfg"))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    if vault_password_file:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(Path(vault_password_file).resolve())
    return env


def playbook(name: str, inventory: str, extra: Mapping[str, Any] | None = None) -> list[str]:
    """The ansible-playbook command line of one project playbook; extra variables go as one
    JSON document (no key=value splitting, so values may hold spaces or '=')."""
    cmd = ["ansible-playbook", "-i", inventory, str(PROJECT / "playbooks" / name)]
    if extra:
        cmd += ["-e", json.dumps(dict(extra), sort_keys=True)]
    return cmd


def json_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run whose results are read as JSON."""
    return {**base, **JSON_ENV}


def parse_json_run(output: str) -> dict[str, Any]:
    """The JSON callback's document from a run's stdout (text after it is ignored)."""
    start = output.find("{\n")
    if start < 0:
        start = output.find("{")
    if start < 0:
        raise ValueError("no JSON document in the output")
    doc, _ = json.JSONDecoder().raw_decode(output[start:])
    if not isinstance(doc, dict):
        raise ValueError("the output's JSON is not an object")
    return doc


def task_results(doc: Mapping[str, Any], name_prefix: str) -> dict[str, dict[str, Any]]:
    """Per host, the result of the first task whose name starts with name_prefix (the task
    name of an included role task is `<role> : <name>`: both forms match)."""
    found: dict[str, dict[str, Any]] = {}
    for play in doc.get("plays") or []:
        for task in play.get("tasks") or []:
            name = str((task.get("task") or {}).get("name", ""))
            short = name.split(" : ", 1)[-1]
            if not (name.startswith(name_prefix) or short.startswith(name_prefix)):
                continue
            for host, result in (task.get("hosts") or {}).items():
                found.setdefault(host, result)
    return found


def failures(doc: Mapping[str, Any]) -> dict[str, str]:
    """Per host, the message of its first failed (or unreachable) task."""
    found: dict[str, str] = {}
    for play in doc.get("plays") or []:
        for task in play.get("tasks") or []:
            for host, result in (task.get("hosts") or {}).items():
                if (result.get("failed") or result.get("unreachable")) and host not in found:
                    found[host] = str(result.get("msg") or result.get("stderr") or "failed")
    return found


def cwd() -> str:
    """Where Ansible commands run: the project (ansible.cfg's relative paths)."""
    return str(PROJECT)
