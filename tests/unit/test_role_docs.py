"""The role READMEs' variable tables match meta/argument_specs.yml (tools/role_docs.py)."""

from pathlib import Path

import pytest

from tools import role_docs

SPEC = """\
---
argument_specs:
  main:
    short_description: Do the thing
    description:
      - Writes <app>.conf.
    options:
      demo_name:
        type: str
        required: true
        description: Name of the app.
      demo_mode:
        type: str
        default: fast
        choices: [fast, safe]
        description:
          - How to run.
          - Pipes | are escaped.
      demo_root:
        type: path
        description: Root directory.
      demo_token:
        type: str
        no_log: true
        description: Token.
  undo:
    short_description: Undo the thing
    options:
      demo_name:
        type: str
        required: true
        description: Name of the app to undo.
      demo_root:
        type: path
        description: Root directory.
      demo_force:
        type: bool
        default: false
        description: Undo even when unsure.
"""


def make_role(tmp_path: Path, readme: str | None = None) -> Path:
    role = tmp_path / "roles" / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(SPEC)
    (role / "meta" / "main.yml").write_text(
        "galaxy_info:\n  description: demo role for the tests\n"
    )
    (role / "defaults" / "main.yml").write_text('demo_root: "/srv/{{ demo_name }}"\n')
    if readme is not None:
        (role / "README.md").write_text(readme)
    return role


def test_render_shows_each_option_once_with_its_entry_points(tmp_path: Path) -> None:
    role = make_role(tmp_path)
    entries = role_docs.load_entry_points(
        role / "meta" / "argument_specs.yml", role_docs.role_defaults(role)
    )
    text = role_docs.render(entries)

    assert text.startswith(role_docs.BEGIN + "\n## Variables\n")
    assert text.endswith(role_docs.END + "\n")
    assert "### Entry point `main`" in text
    assert "### Entry point `undo`" in text
    assert "Writes &lt;app>.conf." in text  # not swallowed as an HTML tag
    # Taken by one entry point: in that entry point's own table.
    assert "| `demo_mode` | str | no | `fast` | `fast`, `safe` | How to run. Pipes \\| are" in text
    assert "| `demo_force` | bool | no | `false` |  | Undo even when unsure. |" in text
    # Taken by both: once, in the shared table, with what differs named per entry point.
    assert text.count("`demo_name`") == 1
    assert text.count("`demo_root`") == 1
    assert (
        "| `demo_name` | all | str | yes |  |  | "
        "*main:* Name of the app.<br>*undo:* Name of the app to undo. |"
    ) in text
    # A default the spec leaves out comes from defaults/main.yml.
    assert "| `demo_root` | all | path | no | `/srv/{{ demo_name }}` |  | Root directory. |" in text
    assert "Secret (`no_log`)" in text


MERGED_SPEC = """\
---
argument_specs:
  main:
    short_description: Do everything
    options:
      <<:
        - &common
          demo_name:
            type: str
            required: true
            description: Name of the app.
        - &build
          demo_repo:
            type: str
            default: ""
            description: Repository.
  build:
    short_description: Build only
    options:
      <<: [*common, *build]
  undo:
    short_description: Undo
    options:
      <<: *common
      demo_force:
        type: bool
        default: false
        description: Undo even when unsure.
"""


def test_options_merged_from_anchors_are_listed_once_with_their_entry_points(
    tmp_path: Path,
) -> None:
    specs = tmp_path / "argument_specs.yml"
    specs.write_text(MERGED_SPEC)
    entries = role_docs.load_entry_points(specs)
    assert [[o.name for o in e.options] for e in entries] == [
        ["demo_name", "demo_repo"],
        ["demo_name", "demo_repo"],
        ["demo_name", "demo_force"],
    ]
    text = role_docs.render(entries)
    assert "<<" not in text
    assert text.count("`demo_name`") == 1
    assert "| `demo_name` | all | str | yes |  |  | Name of the app. |" in text
    assert '| `demo_repo` | all but `undo` | str | no | `""` |  | Repository. |' in text
    assert "| `demo_force` | bool | no | `false` |  | Undo even when unsure. |" in text


def test_readme_is_created_from_meta_and_updated_between_markers(tmp_path: Path) -> None:
    role = make_role(tmp_path)
    roles = role.parent
    assert role_docs.drifted(roles) == [role / "README.md"]

    assert role_docs.main(["--roles-dir", str(roles)]) == 0
    created = (role / "README.md").read_text()
    assert created.startswith("# demo\n\nDemo role for the tests.\n\n" + role_docs.BEGIN)
    assert role_docs.main(["--check", "--roles-dir", str(roles)]) == 0

    # Hand-written prose around the markers survives; a stale table inside them does not.
    stale = f"# demo\n\nProse.\n\n{role_docs.BEGIN}\n| old |\n{role_docs.END}\n\n## Example\n"
    (role / "README.md").write_text(stale)
    assert role_docs.main(["--check", "--roles-dir", str(roles)]) == 1
    assert role_docs.main(["--roles-dir", str(roles)]) == 0
    updated = (role / "README.md").read_text()
    assert updated.startswith("# demo\n\nProse.\n\n" + role_docs.BEGIN)
    assert updated.endswith(role_docs.END + "\n\n## Example\n")
    assert "| old |" not in updated


def test_check_reports_a_drifted_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = make_role(tmp_path, readme="# demo\n\nNo table yet.\n")
    assert role_docs.main(["--check", "--roles-dir", str(role.parent)]) == 1
    err = capsys.readouterr().err
    assert "README.md: out of date" in err
    assert role_docs.COMMAND in err
    assert (role / "README.md").read_text() == "# demo\n\nNo table yet.\n"  # --check writes nothing


def test_every_role_readme_matches_its_argument_specs() -> None:
    stale = role_docs.drifted(role_docs.ROOT / "roles")
    assert not stale, (
        f"out of date with meta/argument_specs.yml: {', '.join(map(str, stale))}; "
        f"run: {role_docs.COMMAND}"
    )
