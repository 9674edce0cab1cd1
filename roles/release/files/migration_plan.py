# Run by `<app>-manage shell -c` in the new release before migrate (djdeploy_migrate, step plan),
# as the runtime user with the release's settings: the migrations `migrate` would apply, from
# Django's own MigrationLoader and MigrationExecutor (the same plan migrate computes), every
# operation described as plain data for the classifier (module_utils/djdeploy_migration_safety.py).
# Prints one line: MARKER followed by the plan as JSON. Reads the database (the applied
# migrations), changes nothing.
from __future__ import annotations

import json
from typing import Any

MARKER = "DJDEPLOY-MIGRATION-PLAN "


def plain(value: Any) -> Any:
    """A JSON-safe copy of a field argument (repr for anything that is not plain data)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def has_db_default(field: Any) -> bool:
    """Django 5's db_default is set (its absence is the NOT_PROVIDED class)."""
    value = getattr(field, "db_default", None)
    return value is not None and getattr(value, "__name__", "") != "NOT_PROVIDED"


def field_info(field: Any) -> dict[str, Any] | None:
    if field is None:
        return None
    _name, path, _args, kwargs = field.deconstruct()
    return {
        "path": path,
        "kwargs": plain(kwargs),
        "null": bool(getattr(field, "null", False)),
        "db_default": has_db_default(field),
        "many_to_many": bool(getattr(field, "many_to_many", False)),
    }


def state_field(state: Any, app_label: str, model_name: str, name: str) -> Any:
    """The field as the project state has it before the operation (None when unknown)."""
    if state is None:
        return None
    model = state.models.get((app_label, str(model_name).lower()))
    return None if model is None else model.fields.get(name)


def describe(op: Any, app_label: str, state: Any) -> dict[str, Any]:
    kind = type(op)
    try:
        text = op.describe()
    except Exception:  # a custom operation's describe() is the app's code
        text = kind.__name__
    data: dict[str, Any] = {
        "type": kind.__name__,
        "module": kind.__module__,
        "describe": text,
        "reversible": bool(getattr(op, "reversible", False)),
    }
    name = kind.__name__
    if name == "AddField":
        data["field"] = field_info(op.field)
    elif name == "AlterField":
        old = state_field(state, app_label, op.model_name, op.name)
        data["old"], data["new"] = field_info(old), field_info(op.field)
    elif name == "RenameField":
        old = state_field(state, app_label, op.model_name, op.old_name)
        data["db_column"] = getattr(old, "db_column", None) if old is not None else None
    elif name == "RunPython":
        data["reverse"] = op.reverse_code is not None
    elif name == "RunSQL":
        data["reverse"] = op.reverse_sql is not None
    elif name == "SeparateDatabaseAndState":
        data["database_operations"] = [
            describe(inner, app_label, state) for inner in op.database_operations
        ]
    return data


def describe_migration(migration: Any, state: Any) -> dict[str, Any]:
    """A migration's operations, with the state walked forward through them (AlterField and
    RenameField compare with the field as it was just before)."""
    operations = []
    for op in migration.operations:
        operations.append(describe(op, migration.app_label, state))
        if state is not None:
            try:
                op.state_forwards(migration.app_label, state)
            except Exception:  # an operation Django cannot replay: compare nothing after it
                state = None
    return {"app": migration.app_label, "name": migration.name, "operations": operations}


def main() -> None:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    loader = executor.loader
    plan = executor.migration_plan(loader.graph.leaf_nodes())
    found = []
    for migration, backwards in plan:
        if backwards:  # `migrate` without targets only goes forwards
            continue
        key = (migration.app_label, migration.name)
        try:
            state = loader.project_state(key, at_end=False)
        except Exception:  # a graph Django cannot replay: classify without the old fields
            state = None
        found.append(describe_migration(migration, state))
    print(MARKER + json.dumps(found))


# The unit tests exec this file with DJDEPLOY_PLAN_TEST set and call the functions above.
if not globals().get("DJDEPLOY_PLAN_TEST"):
    main()
