"""Variable tables of the roles' READMEs, generated from their meta/argument_specs.yml.

`python -m tools.role_docs` rewrites the part of every roles/<role>/README.md between the
BEGIN/END GENERATED VARIABLES markers (a README without the markers gets the section appended;
a role without a README gets one, described by meta/main.yml). `--check` changes nothing and
exits 1 when a README differs from what its spec gives. Edit the spec, then run the command.

A spec is read as ansible-core reads it, YAML anchors and merge keys resolved: an option that
several entry points take (written once and merged into each, as in the release role) gets one
row in "Options of several entry points", naming the entry points that take it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN GENERATED VARIABLES -->"
END = "<!-- END GENERATED VARIABLES -->"
COMMAND = "python -m tools.role_docs"
SUMMARY = "Write the role READMEs' variable tables from meta/argument_specs.yml."
# A default from defaults/main.yml longer than this is referred to rather than shown.
MAX_DEFAULT_CHARS = 60
COLUMNS = ("Name", "Type", "Required", "Default", "Choices", "Description")


@dataclass
class Option:
    """One option of one entry point, each field already rendered as Markdown."""

    name: str
    cells: dict[str, str]


@dataclass
class EntryPoint:
    """One entry point of a role's argument_specs."""

    name: str
    short_description: str
    description: list[str]
    options: list[Option] = field(default_factory=list)


def prose(text: str) -> str:
    """Spec text as Markdown: whitespace folded, `<` escaped outside code spans.

    Without the escape, a placeholder such as <app> would be read as an HTML tag and vanish.
    """
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def as_paragraphs(value: Any) -> list[str]:
    """A spec description (a string or a list of strings) as a list of paragraphs."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [prose(str(item)) for item in items if str(item).strip()]


def code(text: str) -> str:
    """Inline code span that survives backticks and table pipes in its text."""
    text = " ".join(text.split("\n"))
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def literal(value: Any) -> str:
    """A YAML value as the text a user would write in group_vars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def type_of(spec: Mapping[str, Any]) -> str:
    """The type column: `str`, `list of str`, ..."""
    kind = str(spec.get("type", "str"))
    if kind == "list" and "elements" in spec:
        return f"list of {spec['elements']}"
    return kind


def default_of(spec: Mapping[str, Any], name: str, role_defaults: Mapping[str, Any]) -> str:
    """The default column: the spec's default, else the one in defaults/main.yml."""
    if "default" in spec:
        return code(literal(spec["default"]))
    if spec.get("required"):
        return ""
    if name in role_defaults:
        text = literal(role_defaults[name])
        if len(text) > MAX_DEFAULT_CHARS or "\n" in text:
            return "see `defaults/main.yml`"
        return code(text)
    return ""


def description_of(spec: Mapping[str, Any]) -> str:
    """The description column, with secrecy and aliases noted."""
    parts = as_paragraphs(spec.get("description"))
    if spec.get("aliases"):
        parts.append("Aliases: " + ", ".join(code(str(a)) for a in spec["aliases"]) + ".")
    if spec.get("no_log"):
        parts.append("Secret (`no_log`): keep it in a vault.")
    return cell(" ".join(parts))


def options_of(
    specs: Mapping[str, Any], role_defaults: Mapping[str, Any], prefix: str = ""
) -> list[Option]:
    """Rendered options of one entry point, suboptions as `parent.child` rows after their parent."""
    rows: list[Option] = []
    for name, raw in (specs or {}).items():
        spec: Mapping[str, Any] = raw or {}
        full = f"{prefix}{name}"
        choices = spec.get("choices") or []
        rows.append(
            Option(
                full,
                {
                    "Name": code(full),
                    "Type": type_of(spec),
                    "Required": "yes" if spec.get("required") else "no",
                    "Default": default_of(spec, full, role_defaults if not prefix else {}),
                    "Choices": ", ".join(code(literal(c)) for c in choices),
                    "Description": description_of(spec),
                },
            )
        )
        if spec.get("options"):
            rows.extend(options_of(spec["options"], role_defaults, prefix=f"{full}."))
    return rows


def load_entry_points(
    specs_path: Path, role_defaults: Mapping[str, Any] | None = None
) -> list[EntryPoint]:
    """Entry points of a meta/argument_specs.yml, in file order."""
    data = yaml.safe_load(specs_path.read_text()) or {}
    entries: list[EntryPoint] = []
    for name, raw in (data.get("argument_specs") or {}).items():
        spec: Mapping[str, Any] = raw or {}
        entries.append(
            EntryPoint(
                name=str(name),
                short_description=prose(str(spec.get("short_description", ""))),
                description=as_paragraphs(spec.get("description")),
                options=options_of(spec.get("options") or {}, role_defaults or {}),
            )
        )
    return entries


def table(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return lines


def entry_point_list(names: Sequence[str], everyone: Sequence[str]) -> str:
    """Which entry points take an option, as short as it stays exact."""
    missing = [e for e in everyone if e not in names]
    if not missing:
        return "all"
    if len(missing) < len(names):
        return "all but " + ", ".join(code(e) for e in missing)
    return ", ".join(code(e) for e in names)


def merged_row(takers: Mapping[str, Option]) -> dict[str, str]:
    """One row for an option several entry points take; a field that differs names each."""
    row: dict[str, str] = {}
    for column in COLUMNS:
        variants: dict[str, list[str]] = {}
        for entry, option in takers.items():
            variants.setdefault(option.cells[column], []).append(entry)
        if len(variants) == 1:
            row[column] = next(iter(variants))
        else:
            row[column] = "<br>".join(
                f"*{', '.join(entries)}:* {value or '(none)'}"
                for value, entries in variants.items()
            )
    return row


def render(entries: Sequence[EntryPoint]) -> str:
    """The generated section, markers included."""
    lines = [
        BEGIN,
        "## Variables",
        "",
        f"Generated from `meta/argument_specs.yml` by `{COMMAND}`: edit the spec, then run it.",
        "A default the spec leaves out is the one in `defaults/main.yml`.",
    ]
    everyone = [e.name for e in entries]
    takers: dict[str, dict[str, Option]] = {}
    for entry in entries:
        for option in entry.options:
            takers.setdefault(option.name, {})[entry.name] = option
    shared = [name for name, by in takers.items() if len(by) > 1]
    for entry in entries:
        lines += ["", f"### Entry point `{entry.name}`", ""]
        if entry.short_description:
            lines.append(entry.short_description.rstrip(".") + ".")
        for paragraph in entry.description:
            lines += ["", paragraph]
        own = [o.cells for o in entry.options if o.name not in shared]
        if own:
            lines += ["", *table(own, COLUMNS)]
        elif not entry.options:
            lines += ["", "No options."]
        if any(o.name in shared for o in entry.options):
            lines += [
                "",
                "It also takes the options listed for it under "
                "[Options of several entry points](#options-of-several-entry-points).",
            ]
    if shared:
        rows = []
        for name in shared:
            row = merged_row(takers[name])
            row["Entry points"] = entry_point_list(list(takers[name]), everyone)
            rows.append(row)
        lines += ["", "### Options of several entry points", ""]
        lines += table(rows, ("Name", "Entry points", *COLUMNS[1:]))
    lines.append(END)
    return "\n".join(lines) + "\n"


def role_description(role_dir: Path) -> str:
    """galaxy_info.description of meta/main.yml, as a sentence."""
    meta = role_dir / "meta" / "main.yml"
    data = yaml.safe_load(meta.read_text()) if meta.is_file() else {}
    text = " ".join(str((data or {}).get("galaxy_info", {}).get("description", "")).split())
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else ""


def updated_readme(current: str | None, role_dir: Path, section: str) -> str:
    """The README with the generated section in place (new README, markers, or appended)."""
    if current is None:
        intro = role_description(role_dir)
        head = f"# {role_dir.name}\n\n" + (f"{intro}\n\n" if intro else "")
        return head + section
    start, stop = current.find(BEGIN), current.find(END)
    if start != -1 and stop > start:
        return current[:start] + section + current[stop + len(END) :].removeprefix("\n")
    return current.rstrip("\n") + "\n\n" + section


def role_defaults(role_dir: Path) -> dict[str, Any]:
    """defaults/main.yml of a role ({} when it has none)."""
    path = role_dir / "defaults" / "main.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    return data if isinstance(data, dict) else {}


def expected_readme(role_dir: Path) -> str | None:
    """What roles/<role>/README.md should hold, or None for a role without argument_specs."""
    specs = role_dir / "meta" / "argument_specs.yml"
    if not specs.is_file():
        return None
    section = render(load_entry_points(specs, role_defaults(role_dir)))
    readme = role_dir / "README.md"
    return updated_readme(readme.read_text() if readme.is_file() else None, role_dir, section)


def drifted(roles_dir: Path) -> list[Path]:
    """READMEs that differ from what their role's argument_specs give."""
    out = []
    for role_dir in sorted(p for p in roles_dir.iterdir() if p.is_dir()):
        want = expected_readme(role_dir)
        readme = role_dir / "README.md"
        if want is not None and (not readme.is_file() or readme.read_text() != want):
            out.append(readme)
    return out


def write(roles_dir: Path) -> list[Path]:
    """Rewrite the READMEs that drifted; returns them."""
    changed = drifted(roles_dir)
    for readme in changed:
        want = expected_readme(readme.parent)
        assert want is not None
        readme.write_text(want)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the READMEs, or with --check report the ones out of date."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=SUMMARY)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    parser.add_argument("--roles-dir", type=Path, default=ROOT / "roles")
    args = parser.parse_args(argv)
    roles_dir: Path = args.roles_dir

    def shown(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    if args.check:
        stale = drifted(roles_dir)
        for readme in stale:
            print(f"{shown(readme)}: out of date with meta/argument_specs.yml", file=sys.stderr)
        if stale:
            print(f"run: {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for readme in write(roles_dir):
        print(f"wrote {shown(readme)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
