"""The release role's argument_specs: each option defined once, each entry point exact.

roles/release/meta/argument_specs.yml writes every option once, in anchored groups that the
entry points merge (`<<: [*app, *tree, ...]`). These tests keep it that way: no option name is
spelled out twice in the file, ansible-core reads the merged options as PyYAML does, and each
entry point X lists exactly the release_* variables that tasks/X.yml uses, with the task files
it includes or imports, the templates they render (template module or lookup) and the role vars
and defaults they read.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.parsing.yaml.loader import AnsibleLoader
from jinja2 import nodes

ROLE = Path(__file__).resolve().parents[2] / "roles" / "release"
SPECS = ROLE / "meta" / "argument_specs.yml"
PREFIX = "release_"
# Values Ansible evaluates as bare Jinja expressions, without {{ }}.
EXPRESSION_KEYS = {"when", "failed_when", "changed_when", "until", "that"}
INCLUDES = {"include_tasks", "import_tasks"}
TEMPLATE_MODULES = {"ansible.builtin.template", "template"}
UNSUPPORTED = {"include_role", "import_role", "include_vars"}
ENV = jinja2.Environment(autoescape=False)  # parsed only, never rendered


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def entry_points(path: Path = SPECS) -> dict[str, Any]:
    specs: dict[str, Any] = load_yaml(path)["argument_specs"]
    return specs


def option_keys_written(text: str) -> Counter[str]:
    """How often each option name is written as a mapping key in the file's raw text.

    From YAML tokens, so a name in a description or comment does not count, and a group
    merged through an alias (`*tree`) does not count again.
    """
    counts: Counter[str] = Counter()
    tokens = list(yaml.scan(text))
    for token, following in itertools.pairwise(tokens):
        if (
            isinstance(token, yaml.KeyToken)
            and isinstance(following, yaml.ScalarToken)
            and following.value.startswith(PREFIX)
        ):
            counts[following.value] += 1
    return counts


def jinja_names(text: str, expression: bool = False) -> set[str]:
    """Variables a template string (or a bare expression) reads."""
    source = "{{ " + text + " }}" if expression and "{{" not in text else text
    ast = ENV.parse(source)
    return {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"}


def template_lookups(value: Any) -> set[str]:
    """Templates every string inside a YAML value renders with lookup('template', '<src>')."""
    if isinstance(value, dict):
        return set().union(*(template_lookups(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(template_lookups(v) for v in value))
    if not isinstance(value, str) or "lookup" not in value:
        return set()
    found: set[str] = set()
    for call in ENV.parse(value).find_all(nodes.Call):
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name in {"lookup", "query", "q"}
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and call.args[0].value in TEMPLATE_MODULES
        ):
            src = call.args[1] if len(call.args) > 1 else None
            assert isinstance(src, nodes.Const), f"templated template lookup in {value!r}"
            found.add(src.value)
    return found


def names_in(value: Any, key: str | None = None) -> set[str]:
    """Variables every string inside a YAML value reads (keys are names, not templates)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            found |= names_in(v, str(k))
    elif isinstance(value, list):
        for item in value:
            found |= names_in(item, key)
    elif isinstance(value, str):
        found |= jinja_names(value, expression=key in EXPRESSION_KEYS)
    return found


def tasks_in(tasks: Any) -> Iterator[dict[str, Any]]:
    """Every task of a task file, those inside blocks, rescues and always too."""
    for task in tasks or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from tasks_in(task.get(section))


def module_arg(task: dict[str, Any], short_names: set[str]) -> tuple[str, Any] | None:
    """(module, argument) of a task whose module is one of short_names, FQCN or not."""
    for key, value in task.items():
        if key.removeprefix("ansible.builtin.") in short_names:
            return key, value
    return None


def variables_of_task_file(name: str, seen: set[str]) -> set[str]:
    """Variables read by tasks/<name>, the task files it includes and the templates it renders."""
    if name in seen:
        return set()
    seen.add(name)
    tasks = load_yaml(ROLE / "tasks" / name)
    found = names_in(tasks)
    for task in tasks_in(tasks):
        unsupported = module_arg(task, UNSUPPORTED)
        # Another role's entry point validates its own variables (the ones passed here are
        # read by this task and counted above); including the release role itself is not.
        other_role = (
            unsupported is not None
            and unsupported[0].removeprefix("ansible.builtin.") in ("include_role", "import_role")
            and unsupported[1].get("name") != "release"
        )
        assert unsupported is None or other_role, (
            f"tasks/{name}: this test does not follow {unsupported and unsupported[0]}"
        )
        include = module_arg(task, INCLUDES)
        if include is not None:
            target = include[1] if isinstance(include[1], str) else include[1]["file"]
            assert "{{" not in target, f"tasks/{name}: templated include {target!r}"
            found |= variables_of_task_file(target, seen)
        template = module_arg(task, {"template"})
        if template is not None:
            src = template[1]["src"]
            assert "{{" not in src, f"tasks/{name}: templated template src {src!r}"
            found |= jinja_names((ROLE / "templates" / src).read_text())
    for src in template_lookups(tasks):
        found |= jinja_names((ROLE / "templates" / src).read_text())
    return found


def variables_set_in_task_file(name: str, seen: set[str]) -> set[str]:
    """Variables tasks/<name> and the files it includes set themselves.

    A set_fact, or the vars given to an include_tasks: such a variable is the entry point's own
    (e.g. release_state, which build.yml sets for the later plays and rollback.yml gives the
    switch), not an input its caller has to pass. A set_fact that updates a variable from its own
    value (stage.yml adds to release_state) reads it: that one stays an input.
    """
    if name in seen:
        return set()
    seen.add(name)
    tasks = load_yaml(ROLE / "tasks" / name)
    found: set[str] = set()
    for task in tasks_in(tasks):
        set_fact = module_arg(task, {"set_fact"})
        if set_fact is not None:
            found |= {var for var, value in set_fact[1].items() if var not in names_in(value)}
        include = module_arg(task, INCLUDES)
        if include is not None:
            found |= set(task.get("vars") or {})
            target = include[1] if isinstance(include[1], str) else include[1]["file"]
            found |= variables_set_in_task_file(target, seen)
    return found


def with_indirect(names: set[str]) -> set[str]:
    """names plus what the role vars and defaults among them read, transitively."""
    definitions = {
        **load_yaml(ROLE / "defaults" / "main.yml"),
        **load_yaml(ROLE / "vars" / "main.yml"),
    }
    done: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in done:
            done.add(name)
            if name in definitions:
                todo += names_in(definitions[name])
    return done


def used_by_entry_point(entry: str) -> set[str]:
    """Public release_* variables entry point `entry` reads (role-internal vars excluded)."""
    role_vars = set(load_yaml(ROLE / "vars" / "main.yml"))
    read = variables_of_task_file(f"{entry}.yml", set())
    used = with_indirect(read - variables_set_in_task_file(f"{entry}.yml", set()))
    return {n for n in used if n.startswith(PREFIX) and n not in role_vars}


def test_each_option_is_written_once() -> None:
    text = SPECS.read_text()
    written = option_keys_written(text)
    twice = sorted(name for name, count in written.items() if count > 1)
    assert not twice, (
        f"{SPECS.relative_to(ROLE.parent.parent)} defines {', '.join(twice)} more than once: "
        "define an option once, in the anchored group of the entry points that use it"
    )
    # Every option an entry point takes is one of those written keys (nothing else defines one).
    taken = {name for spec in entry_points().values() for name in spec.get("options") or {}}
    assert taken == set(written)


def test_ansible_reads_the_merged_options() -> None:
    text = SPECS.read_text()
    by_ansible = AnsibleLoader(text).get_single_data()["argument_specs"]
    by_pyyaml = yaml.safe_load(text)["argument_specs"]
    assert list(by_ansible) == list(by_pyyaml)
    for entry, spec in by_pyyaml.items():
        assert list(by_ansible[entry]["options"]) == list(spec["options"]), entry
        assert dict(by_ansible[entry]["options"]) == spec["options"], entry
        assert "<<" not in spec["options"], entry


@pytest.mark.parametrize("entry", list(entry_points()))
def test_entry_point_lists_exactly_the_variables_its_tasks_use(entry: str) -> None:
    options = set(entry_points()[entry].get("options") or {})
    used = used_by_entry_point(entry)
    missing, unused = sorted(used - options), sorted(options - used)
    assert not missing, f"entry point {entry}: tasks/{entry}.yml or what it includes uses {missing}"
    assert not unused, f"entry point {entry}: lists {unused}, which tasks/{entry}.yml never uses"


def test_the_usage_scan_sees_indirect_uses() -> None:
    # migrate reads release_app_name only through a role var (__release_manage) and defaults
    # (release_runtime_user); the scan must follow both.
    assert "release_app_name" in used_by_entry_point("migrate")
    assert "release_app_name" in with_indirect({"release_runtime_user"})
    assert "release_app_name" in with_indirect({"__release_manage"})
    assert "release_names" in used_by_entry_point("migrate")  # __release_failed_marker
    # Values passed to another role's entry point (include_role vars) are uses.
    assert {"release_db_name", "release_backup_keep"} <= used_by_entry_point("migrate")
    # A name inside a quoted string of a message is not a use.
    assert jinja_names("{{ release_knobs.x | default('release_pip_extra_packages') }}") == {
        "release_knobs"
    }
    assert jinja_names("release_migrate | bool and __release_x", expression=True) == {
        "release_migrate",
        "__release_x",
    }
    # A template rendered on the controller (lookup) counts like one the template module renders:
    # build reads release_db_port only in env.j2, rendered in layout.yml's module arguments.
    assert template_lookups({"a": ["{{ lookup('ansible.builtin.template', 'env.j2') }}"]}) == {
        "env.j2"
    }
    assert "release_db_port" in used_by_entry_point("build")
