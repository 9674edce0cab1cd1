"""The postgres role's backup and restore entry points list exactly the options they use.

roles/postgres/meta/argument_specs.yml defines each option once (anchored groups merged into
the entry points that share them, as in the release role). backup and restore are included
by other roles and playbooks (`include_role: tasks_from: backup`), so their lists are the
contract: a variable the tasks read but the entry point does not list would not be validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_release_specs import load_yaml, module_arg, names_in, option_keys_written, tasks_in

ROLE = Path(__file__).resolve().parents[2] / "roles" / "postgres"
SPECS = ROLE / "meta" / "argument_specs.yml"


def specs() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(SPECS)["argument_specs"]
    return loaded


def read_by(name: str, seen: set[str]) -> tuple[set[str], set[str]]:
    """(variables tasks/<name> and what it imports read, those its imports set as task vars)."""
    if name in seen:
        return set(), set()
    seen.add(name)
    tasks = load_yaml(ROLE / "tasks" / name)
    found, overridden = names_in(tasks), set()
    for task in tasks_in(tasks):
        include = module_arg(task, {"include_tasks", "import_tasks"})
        if include is not None:
            overridden |= set(task.get("vars") or {})
            more, more_overridden = read_by(include[1], seen)
            found |= more
            overridden |= more_overridden
    return found, overridden


def used_by(name: str) -> set[str]:
    """postgres_* variables an entry point reads, through the role vars it does not override."""
    found, overridden = read_by(name, set())
    role_vars = load_yaml(ROLE / "vars" / "main.yml")
    todo, done = list(found), set()
    while todo:
        var = todo.pop()
        if var not in done:
            done.add(var)
            if var in role_vars and var not in overridden:
                todo += names_in(role_vars[var])
    return {v for v in done if v.startswith("postgres_")}


def test_each_option_is_written_once() -> None:
    written = option_keys_written(SPECS.read_text().replace("postgres_", "release_"))
    assert not [name for name, count in written.items() if count > 1]


@pytest.mark.parametrize("entry", ["backup", "restore", "client"])
def test_entry_point_lists_exactly_what_it_uses(entry: str) -> None:
    options = set(specs()[entry]["options"])
    assert used_by(f"{entry}.yml") == options


def test_backup_and_restore_share_the_dump_options() -> None:
    backup, restore = specs()["backup"]["options"], specs()["restore"]["options"]
    for name in ("postgres_db_name", "postgres_backup_dir", "postgres_backup_keep"):
        assert backup[name] == restore[name]
    # The defaults file has every option a caller may leave out.
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for spec in (backup, restore):
        for name, option in spec.items():
            if not option.get("required"):
                assert name in defaults, name
