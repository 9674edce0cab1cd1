"""The migration safety classifier (roles/release/module_utils/djdeploy_migration_safety.py)
over a table of operations as files/migration_plan.py describes them, the refusal message, the
records, and the plan script's description of (fake) Django operations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .loader import ROOT, load

safety = load("roles/release/module_utils/djdeploy_migration_safety.py")

OPS = "django.db.migrations.operations"
PG = "django.contrib.postgres.operations"


def op(kind: str, module: str = f"{OPS}.models", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "module": module, "describe": f"a {kind}", "reversible": True, **extra}


def field(
    path: str = "django.db.models.CharField", null: bool = False, **kw: Any
) -> dict[str, Any]:
    return {
        "path": path,
        "kwargs": {"max_length": 100, **({"null": True} if null else {}), **kw},
        "null": null,
        "db_default": False,
        "many_to_many": False,
    }


def alter(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    return op("AlterField", f"{OPS}.fields", old=old, new=new)


CHAR = "django.db.models.CharField"
TABLE: list[tuple[str, dict[str, Any], str]] = [
    # Adds what the old code does not use, or changes Django's state only.
    ("create-model", op("CreateModel"), "safe"),
    ("add-index", op("AddIndex"), "safe"),
    ("remove-index", op("RemoveIndex"), "safe"),
    ("rename-index", op("RenameIndex"), "safe"),
    ("add-constraint", op("AddConstraint"), "safe"),
    ("remove-constraint", op("RemoveConstraint"), "safe"),
    ("unique-together", op("AlterUniqueTogether"), "safe"),
    ("model-options", op("AlterModelOptions"), "safe"),
    ("model-managers", op("AlterModelManagers"), "safe"),
    ("table-comment", op("AlterModelTableComment"), "safe"),
    ("pg-extension", op("HStoreExtension", PG), "safe"),
    ("pg-index-concurrently", op("AddIndexConcurrently", PG), "safe"),
    ("pg-remove-collation", op("RemoveCollation", PG), "unknown"),
    # AddField: the old code's inserts leave the column out.
    ("add-nullable", op("AddField", field={"null": True}), "safe"),
    ("add-db-default", op("AddField", field={"null": False, "db_default": True}), "safe"),
    ("add-m2m", op("AddField", field={"many_to_many": True}), "safe"),
    ("add-not-null", op("AddField", field={"null": False, "db_default": False}), "unsafe"),
    ("add-not-null-python-default", op("AddField", field={"kwargs": {"default": 1}}), "unsafe"),
    # What the old code still uses.
    ("remove-field", op("RemoveField"), "unsafe"),
    ("delete-model", op("DeleteModel"), "unsafe"),
    ("rename-field", op("RenameField"), "unsafe"),
    ("rename-field-db-column", op("RenameField", db_column="text"), "safe"),
    ("rename-model", op("RenameModel"), "unsafe"),
    ("model-table", op("AlterModelTable"), "unsafe"),
    ("order-with-respect-to", op("AlterOrderWithRespectTo"), "unsafe"),
    # AlterField, before and after.
    ("alter-help-text", alter(field(), field(help_text="x")), "safe"),
    ("alter-default-choices", alter(field(), field(default="a", choices=[["a", "A"]])), "safe"),
    ("alter-to-nullable", alter(field(), field(null=True)), "safe"),
    ("alter-to-not-null", alter(field(null=True), field()), "unsafe"),
    ("alter-type", alter(field(), field("django.db.models.TextField")), "unsafe"),
    ("alter-widen", alter(field(), field(max_length=200)), "safe"),
    ("alter-narrow", alter(field(), field(max_length=50)), "unsafe"),
    ("alter-db-column", alter(field(), field(db_column="body")), "unsafe"),
    ("alter-decimal-places", alter(field(decimal_places=2), field(decimal_places=3)), "unsafe"),
    ("alter-unknown-kwarg", alter(field(), field(dimensions=3)), "unsafe"),
    ("alter-add-unique", alter(field(), field(unique=True, db_index=True)), "safe"),
    ("alter-unreadable-old", alter(None, field()), "unknown"),
    # Data and raw SQL.
    ("run-python-reverse", op("RunPython", f"{OPS}.special", reverse=True), "safe"),
    ("run-python-no-reverse", op("RunPython", f"{OPS}.special", reverse=False), "unknown"),
    ("run-sql", op("RunSQL", f"{OPS}.special", reverse=True), "unknown"),
    # State only, or the worst database operation.
    ("separate-state-only", op("SeparateDatabaseAndState", database_operations=[]), "safe"),
    (
        "separate-db-remove",
        op("SeparateDatabaseAndState", database_operations=[op("AddIndex"), op("RemoveField")]),
        "unsafe",
    ),
    # Anything djdeploy does not know, Django's or third-party.
    ("custom-operation", op("AddField", "someapp.operations", field={"null": True}), "unknown"),
    ("future-django-operation", op("AlterSomethingNew"), "unknown"),
]


@pytest.mark.parametrize(
    ("operation", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_classify(operation: dict[str, Any], expected: str) -> None:
    verdict = safety.classify(operation)
    assert verdict.kind == expected
    if expected != "safe":
        assert verdict.reason
        assert verdict.advice


def migration(app: str, name: str, *ops: dict[str, Any]) -> dict[str, Any]:
    return {"app": app, "name": name, "operations": list(ops)}


PLAN = [
    migration("shop", "0012_product_sku", op("AddField", field={"null": True})),
    migration(
        "shop",
        "0013_remove_product_code",
        op("AddIndex"),
        op("RemoveField", describe="Remove field code from product"),
    ),
    migration(
        "auth",
        "0013_data",
        op("RunPython", f"{OPS}.special", reverse=False, reversible=False),
    ),
]


def test_assess_refuses_every_unsafe_operation_in_one_message() -> None:
    judged = safety.assess(PLAN, live="20260101T000000Z-aaaa", release="20260102T000000Z-bbbb")
    assert [f.migration for f in judged.refused] == [
        "shop.0013_remove_product_code",
        "auth.0013_data",
    ]
    message = judged.message
    assert message.startswith("release: the migrations of 20260102T000000Z-bbbb are not safe")
    assert "live release 20260101T000000Z-aaaa" in message
    assert "Nothing was migrated and no host was switched" in message
    # App, migration, operation, why, and the way to do it in steps, per operation.
    assert (
        "shop.0013_remove_product_code, operation 2 (RemoveField: Remove field code from product):"
        " unsafe, the live code still reads and writes this column" in message
    )
    assert "auth.0013_data, operation 1 (RunPython: a RunPython): unknown" in message
    assert "SeparateDatabaseAndState" in message
    assert "expand/contract" in message
    # Third-party and own apps alike; the safe migration is not listed.
    assert "shop.0012_product_sku" not in message
    assert "-e release_allow_unsafe_migrations=true" in message
    assert (
        '-e \'{"release_allow_unsafe_migrations_list": ["auth.0013_data",'
        ' "shop.0013_remove_product_code"]}\'' in message
    )


def test_the_records_say_what_is_reversible_and_what_allowed_the_unsafe() -> None:
    judged = safety.assess(
        PLAN, live="x", release="y", allow=["shop.0013_remove_product_code", "other.0001_x"]
    )
    assert [f.migration for f in judged.refused] == ["auth.0013_data"]
    assert judged.migrations == [
        {"name": "shop.0012_product_sku", "reversible": True},
        {
            "name": "shop.0013_remove_product_code",
            "reversible": True,
            "unsafe": ["RemoveField: Remove field code from product (unsafe)"],
            "allowed_by": "release_allow_unsafe_migrations_list",
        },
        {
            "name": "auth.0013_data",
            "reversible": False,
            "unsafe": ["RunPython: a RunPython (unknown)"],
            "allowed_by": "",
        },
    ]
    rows = judged.classification()
    assert [(r["migration"], r["class"], r["refused"]) for r in rows] == [
        ("shop.0013_remove_product_code", "unsafe", False),
        ("auth.0013_data", "unknown", True),
    ]


def test_allow_all_and_a_first_deploy_refuse_nothing() -> None:
    allowed = safety.assess(PLAN, live="x", release="y", allow_all=True)
    assert not allowed.refused
    assert not allowed.message
    assert allowed.migrations[1]["allowed_by"] == "release_allow_unsafe_migrations"
    first = safety.assess(PLAN, live="", release="y")
    assert not first.refused
    assert first.migrations[2]["allowed_by"] == "no live release"


def test_nothing_planned_is_nothing_to_say() -> None:
    judged = safety.assess([], live="x", release="y")
    assert (judged.migrations, judged.refused, judged.message) == ([], [], "")


def test_allow_list_entries_must_be_migration_names() -> None:
    assert safety.bad_allow_entries(["shop.0012_x", "0012_x", "shop", "a.b.c", ""]) == [
        "0012_x",
        "shop",
        "a.b.c",
        "",
    ]


def test_record_names_reads_old_and_new_records() -> None:
    assert safety.record_names(["a.0001_x"]) == ["a.0001_x"]
    assert safety.record_names([{"name": "a.0001_x", "reversible": True}]) == ["a.0001_x"]
    assert safety.record_names([]) == []
    assert safety.record_names({"name": "a"}) is None
    assert safety.record_names([{"reversible": True}]) is None


# The plan script, run on fake Django objects (its functions only look at class names and
# attributes; Django itself is imported in main(), which the flag keeps from running).
SCRIPT = ROOT / "roles" / "release" / "files" / "migration_plan.py"


def plan_script() -> dict[str, Any]:
    namespace: dict[str, Any] = {"DJDEPLOY_PLAN_TEST": True, "__name__": "plan_script"}
    exec(compile(SCRIPT.read_text(), str(SCRIPT), "exec"), namespace)
    return namespace


class NOT_PROVIDED:  # noqa: N801 - Django's sentinel is this class itself
    pass


class FakeField:
    def __init__(self, path: str = CHAR, null: bool = False, **kwargs: Any) -> None:
        self.path, self.null, self.kwargs = path, null, kwargs
        self.db_default: Any = kwargs.pop("db_default", NOT_PROVIDED)
        self.db_column = kwargs.get("db_column")
        self.many_to_many = False

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        kwargs = dict(self.kwargs)
        if self.null:
            kwargs["null"] = True
        return "name", self.path, [], kwargs


class FakeOp:
    reversible = True

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)

    def describe(self) -> str:
        return f"{type(self).__name__} {getattr(self, 'name', '')}".strip()

    def state_forwards(self, app_label: str, state: FakeState) -> None:
        if type(self).__name__ == "AlterField":
            attrs = self.__dict__
            model = state.models[(app_label, attrs["model_name"].lower())]
            model.fields[attrs["name"]] = attrs["field"]


def fake_op(kind: str, module: str = "django.db.migrations.operations.fields") -> type[FakeOp]:
    return type(kind, (FakeOp,), {"__module__": module})


class FakeModelState:
    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields


class FakeState:
    def __init__(self) -> None:
        self.models = {("shop", "product"): FakeModelState({"code": FakeField(max_length=10)})}


class FakeMigration:
    app_label = "shop"
    name = "0013_x"

    def __init__(self, *operations: FakeOp) -> None:
        self.operations = operations


def test_the_plan_script_describes_operations_for_the_classifier() -> None:
    script = plan_script()
    alter_field, add_field = fake_op("AlterField"), fake_op("AddField")
    run_python = fake_op("RunPython", "django.db.migrations.operations.special")
    custom = fake_op("AddField", "someapp.operations")
    ops = [
        # Widen, then make NOT NULL: the second compares with the state after the first.
        alter_field(model_name="Product", name="code", field=FakeField(max_length=20, null=True)),
        alter_field(model_name="Product", name="code", field=FakeField(max_length=20)),
        add_field(model_name="Product", name="sku", field=FakeField(db_default="x")),
        run_python(reverse_code=None, reversible=False),
        custom(model_name="Product", name="x", field=FakeField(null=True)),
    ]
    described = script["describe_migration"](FakeMigration(*ops), FakeState())
    assert described["app"] == "shop"
    assert described["name"] == "0013_x"
    first, second, add, data, custom_op = described["operations"]
    assert first["old"]["kwargs"] == {"max_length": 10}
    assert first["new"]["null"] is True
    assert second["old"]["null"] is True
    assert add["field"]["db_default"] is True
    assert data == {
        "type": "RunPython",
        "module": "django.db.migrations.operations.special",
        "describe": "RunPython",
        "reversible": False,
        "reverse": False,
    }
    assert custom_op["module"] == "someapp.operations"
    verdicts = [safety.classify(o).kind for o in described["operations"]]
    assert verdicts == ["safe", "unsafe", "safe", "unknown", "unknown"]


def test_the_plan_script_makes_field_arguments_json_safe() -> None:
    script = plan_script()
    assert script["plain"]({"a": (1, Path("/x")), 2: None}) == {
        "a": [1, repr(Path("/x"))],
        "2": None,
    }
    assert script["has_db_default"](FakeField()) is False
