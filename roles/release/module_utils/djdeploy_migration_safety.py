"""Whether the migrations of a new release are safe for the release that is live now.

During a rolling release the migrations run once, before any host switches: until the last
host has switched (and again after a rollback) the old code serves requests against the new
schema. This module classifies each planned operation for that window and builds the one
message that refuses a release, and the records of what a release applied.

The plan comes from files/migration_plan.py, run with Django's own MigrationLoader and
MigrationExecutor in the new release: one dict per migration (``app``, ``name``,
``operations``), one dict per operation (``type``, ``module``, ``describe``, ``reversible``
and, per type, the fields involved). Nothing here imports Django.

Classes: ``safe`` (the old code keeps working), ``unsafe`` (it breaks), ``unknown`` (djdeploy
cannot tell: raw SQL, a data migration without a reverse, an operation it does not know),
treated as unsafe. The table is in the release role's README.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SAFE = "safe"
UNSAFE = "unsafe"
UNKNOWN = "unknown"
ALLOW_ALL_KNOB = "release_allow_unsafe_migrations"
ALLOW_LIST_KNOB = "release_allow_unsafe_migrations_list"
MIGRATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*[.][A-Za-z0-9_]+")

# Operation classes of django.db.migrations and django.contrib.postgres that never break the
# code that is live: they add something the old code does not use, change only Django's state,
# or change indexes and constraints (a constraint must hold for the rows the old code writes:
# that is the app's business, as with any constraint).
ALWAYS_SAFE = frozenset(
    {
        "CreateModel",
        "AddIndex",
        "RemoveIndex",
        "RenameIndex",
        "AddConstraint",
        "RemoveConstraint",
        "AlterConstraint",
        "AlterUniqueTogether",
        "AlterIndexTogether",
        "AlterModelOptions",
        "AlterModelManagers",
        "AlterModelTableComment",
        # django.contrib.postgres.operations
        "CreateExtension",
        "BloomExtension",
        "BtreeGinExtension",
        "BtreeGistExtension",
        "CITextExtension",
        "CryptoExtension",
        "HStoreExtension",
        "TrigramExtension",
        "UnaccentExtension",
        "AddIndexConcurrently",
        "RemoveIndexConcurrently",
        "AddConstraintNotValid",
        "ValidateConstraint",
        "CreateCollation",
    }
)

EXPAND_CONTRACT = (
    "expand/contract: add the new shape beside the old one (nullable or with a db_default), "
    "release, backfill, move the code over, then remove the old shape in a later release"
)

# What an unsafe operation does to the live code, and the way to do it in steps.
ADVICE = {
    "RemoveField": (
        "the live code still reads and writes this column",
        "first release code that no longer uses the field (make it nullable or give it a "
        "db_default, and drop it from the model only: SeparateDatabaseAndState with "
        "state_operations=[RemoveField]), then remove the column in a later release",
    ),
    "DeleteModel": (
        "the live code still uses this table",
        "first release code that no longer uses the model (drop it from the state only with "
        "SeparateDatabaseAndState), then delete the table in a later release",
    ),
    "RenameField": (
        "the live code still uses the old column name",
        "add the new field nullable, release code that writes both, backfill, move the reads, "
        "then remove the old field in a later release (or keep the column with db_column)",
    ),
    "RenameModel": (
        "the live code still uses the old table name",
        "create the new model, release code that writes both, backfill, then delete the old "
        "model in a later release (or keep the table with db_table)",
    ),
    "AlterModelTable": (
        "the live code still uses the old table name",
        "keep the old table name (db_table), or copy to a new model in steps: create it, "
        "write both, backfill, then delete the old one in a later release",
    ),
    "AlterOrderWithRespectTo": (
        "adds or drops the _order column: the live code does not write it, or still orders by it",
        "add an explicit, nullable order field instead, release, backfill, then remove the "
        "old ordering in a later release",
    ),
    "AddField": (
        "NOT NULL without a database default: the live code inserts rows without this column",
        "add it with null=True or a db_default (Django 5), release, backfill, then make it "
        "NOT NULL in a later release",
    ),
    "AlterField:null": (
        "makes the column NOT NULL: the live code may write NULL into it",
        "first release code that always writes a value and backfill the NULLs, then make it "
        "NOT NULL in a later release (with a db_default if rows may still come without it)",
    ),
    "AlterField:column": (
        "renames the column the live code uses (db_column)",
        "add the new field nullable, release code that writes both, backfill, move the reads, "
        "then remove the old field in a later release",
    ),
    "AlterField:type": (
        "changes the column's type: the live code reads and writes the old one",
        "add a new field of the new type, nullable, release code that writes both, backfill, "
        "move the reads, then remove the old field in a later release",
    ),
    "AlterField:narrow": (
        "shortens the column: values the live code writes may no longer fit",
        "first release code that writes only values that fit, then shorten the column in a "
        "later release",
    ),
    "RunPython": (
        "a data migration without a reverse: djdeploy cannot tell what it leaves to the live "
        "code, and it cannot be migrated backwards",
        "give it a reverse (RunPython(forward, backward), or RunPython.noop when undoing needs "
        "nothing) once you have checked the live code copes with the data it leaves",
    ),
    "RunSQL": (
        "raw SQL: djdeploy cannot tell what it does to the schema the live code uses",
        "check the SQL against the live code, then allow this migration knowingly",
    ),
    "AlterField:unknown": (
        "djdeploy could not read the field before this change",
        "check the change against the live code, then allow this migration knowingly",
    ),
    "unknown": (
        "an operation djdeploy does not know: it cannot tell what it does to the schema",
        "check it against the live code, then allow this migration knowingly",
    ),
}

# Field arguments (deconstruct() kwargs) that do not change the column the live code uses:
# Django-level behaviour, forms, admin, or indexes and constraints.
HARMLESS_FIELD_ARGS = frozenset(
    {
        "verbose_name",
        "help_text",
        "choices",
        "default",
        "db_default",
        "validators",
        "blank",
        "editable",
        "error_messages",
        "db_comment",
        "related_name",
        "related_query_name",
        "limit_choices_to",
        "on_delete",
        "auto_now",
        "auto_now_add",
        "upload_to",
        "storage",
        "db_index",
        "unique",
        "unique_for_date",
        "unique_for_month",
        "unique_for_year",
        "db_tablespace",
        "db_constraint",
        "serialize",
        "primary_key",
        "width_field",
        "height_field",
        "allow_unicode",
        "match",
        "recursive",
        "allow_files",
        "allow_folders",
        "protocol",
        "unpack_ipv4",
    }
)


@dataclass(frozen=True)
class Verdict:
    """The class of one operation, why, and the way to do it in steps (unsafe and unknown)."""

    kind: str
    reason: str = ""
    advice: str = ""


def _advice(key: str, kind: str = UNSAFE) -> Verdict:
    reason, advice = ADVICE[key]
    return Verdict(kind, reason, advice)


def _is_django(op: dict[str, Any]) -> bool:
    module = str(op.get("module", ""))
    return module == "django" or module.startswith("django.")


def classify_add_field(op: dict[str, Any]) -> Verdict:
    """Safe when the old code's inserts (without this column) still work."""
    info = op.get("field") or {}
    if info.get("many_to_many"):
        return Verdict(SAFE, "a new join table")
    if info.get("null"):
        return Verdict(SAFE, "nullable")
    if info.get("db_default"):
        return Verdict(SAFE, "NOT NULL with a database default")
    return _advice("AddField")


def _max_length(kwargs: dict[str, Any]) -> int | None:
    value = kwargs.get("max_length")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify_alter_field(op: dict[str, Any]) -> Verdict:
    """Compare the field before and after, argument by argument (deconstruct())."""
    old, new = op.get("old"), op.get("new")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return _advice("AlterField:unknown", UNKNOWN)
    if old.get("many_to_many") or new.get("many_to_many"):
        if old.get("path") == new.get("path") and old.get("kwargs") == new.get("kwargs"):
            return Verdict(SAFE, "no change to the tables")
        return _advice("AlterField:unknown", UNKNOWN)
    if old.get("path") != new.get("path"):
        return _advice("AlterField:type")
    if old.get("null") and not new.get("null"):
        return _advice("AlterField:null")
    before: dict[str, Any] = dict(old.get("kwargs") or {})
    after: dict[str, Any] = dict(new.get("kwargs") or {})
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    changed -= HARMLESS_FIELD_ARGS | {"null"}
    if "db_column" in changed:
        return _advice("AlterField:column")
    if "max_length" in changed:
        was, now = _max_length(before), _max_length(after)
        if was is not None and (now is None or now < was):
            return _advice("AlterField:narrow")
        changed.discard("max_length")
    if changed:
        return _advice("AlterField:type")
    return Verdict(SAFE, "the column keeps its name, type and NULL-ability for the live code")


def classify(op: dict[str, Any]) -> Verdict:
    """The class of one operation described by files/migration_plan.py."""
    kind = str(op.get("type", ""))
    if not _is_django(op):
        return _advice("unknown", UNKNOWN)
    if kind in ALWAYS_SAFE:
        return Verdict(SAFE)
    if kind == "AddField":
        return classify_add_field(op)
    if kind == "AlterField":
        return classify_alter_field(op)
    if kind == "RenameField" and op.get("db_column"):
        return Verdict(SAFE, "the column keeps its name (db_column)")
    if kind in ("RemoveField", "DeleteModel", "RenameField", "RenameModel", "AlterModelTable"):
        return _advice(kind)
    if kind == "AlterOrderWithRespectTo":
        return _advice(kind)
    if kind == "RunPython":
        return Verdict(SAFE, "has a reverse") if op.get("reverse") else _advice(kind, UNKNOWN)
    if kind == "RunSQL":
        return _advice(kind, UNKNOWN)
    if kind == "SeparateDatabaseAndState":
        return classify_separate(op)
    return _advice("unknown", UNKNOWN)


def classify_separate(op: dict[str, Any]) -> Verdict:
    """Only the database operations touch the schema: the worst of them (safe when none)."""
    worst = Verdict(SAFE, "changes Django's state only")
    for inner in op.get("database_operations") or []:
        verdict = classify(inner)
        if verdict.kind != SAFE:
            return Verdict(
                verdict.kind,
                f"database operation {inner.get('type', '?')}: {verdict.reason}",
                verdict.advice,
            )
    return worst


@dataclass
class Finding:
    """One operation of the plan that is not safe for the live code."""

    migration: str
    index: int
    operation: str
    type: str
    verdict: Verdict

    def text(self) -> str:
        what = self.verdict.kind
        return (
            f"{self.migration}, operation {self.index} ({self.type}: {self.operation}): "
            f"{what}, {self.verdict.reason}. Instead: {self.verdict.advice}."
        )


@dataclass
class Assessment:
    """The plan judged against the live release and the operator's allowances."""

    migrations: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    refused: list[Finding] = field(default_factory=list)
    message: str = ""

    def classification(self) -> list[dict[str, Any]]:
        """Every unsafe or unknown operation, for the module's result."""
        return [
            {
                "migration": f.migration,
                "index": f.index,
                "type": f.type,
                "operation": f.operation,
                "class": f.verdict.kind,
                "reason": f.verdict.reason,
                "advice": f.verdict.advice,
                "refused": f in self.refused,
            }
            for f in self.findings
        ]


def bad_allow_entries(allow: list[str]) -> list[str]:
    """Entries of the allow list that are not <app label>.<migration name>."""
    return [name for name in allow if not MIGRATION_NAME.fullmatch(name)]


def migration_name(migration: dict[str, Any]) -> str:
    return f"{migration.get('app', '?')}.{migration.get('name', '?')}"


def assess(
    plan: list[dict[str, Any]],
    *,
    live: str,
    release: str,
    allow_all: bool = False,
    allow: list[str] | None = None,
) -> Assessment:
    """Classify every operation of the plan; refuse the unsafe ones unless allowed.

    Nothing is refused without a live release (a first deploy: no old code to break).
    ``migrations`` are the records of what the release will apply: name, whether Django can
    migrate it backwards, its unsafe operations and what allowed them.
    """
    allowed = set(allow or [])
    result = Assessment()
    for migration in plan:
        name = migration_name(migration)
        operations = migration.get("operations") or []
        unsafe: list[str] = []
        for index, op in enumerate(operations, start=1):
            verdict = classify(op)
            if verdict.kind == SAFE:
                continue
            finding = Finding(
                name, index, str(op.get("describe", "")), str(op.get("type", "?")), verdict
            )
            result.findings.append(finding)
            unsafe.append(f"{finding.type}: {finding.operation} ({verdict.kind})")
            if live and not allow_all and name not in allowed:
                result.refused.append(finding)
        record: dict[str, Any] = {
            "name": name,
            "reversible": all(bool(op.get("reversible", False)) for op in operations),
        }
        if unsafe:
            record["unsafe"] = unsafe
            record["allowed_by"] = (
                "no live release"
                if not live
                else ALLOW_ALL_KNOB
                if allow_all
                else ALLOW_LIST_KNOB
                if name in allowed
                else ""
            )
        result.migrations.append(record)
    if result.refused:
        result.message = refusal_message(result.refused, live=live, release=release)
    return result


def refusal_message(refused: list[Finding], *, live: str, release: str) -> str:
    """The one message that refuses a release: every unsafe operation, the way to do it in
    steps, and how to proceed knowingly."""
    names = sorted({f.migration for f in refused})
    lines = [
        f"release: the migrations of {release} are not safe for the live release {live}, which "
        "keeps serving against the new schema until every host has switched (and again after "
        "a rollback). Nothing was migrated and no host was switched.",
        "Unsafe for the live code:",
        *(f"  - {f.text()}" for f in refused),
        f"Do it in steps ({EXPAND_CONTRACT}). Or proceed knowingly: "
        f"-e {ALLOW_ALL_KNOB}=true, or only these migrations: "
        f"-e '{json.dumps({ALLOW_LIST_KNOB: names})}'.",
    ]
    return "\n".join(lines)


def record_names(record: Any) -> list[str] | None:
    """The migration names of a migrations record: a list of names (older releases) or of
    entries with a name; None when it is neither."""
    if not isinstance(record, list):
        return None
    names: list[str] = []
    for entry in record:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
        else:
            return None
    return names
