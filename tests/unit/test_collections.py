"""Every collection the code uses is listed in requirements.yml and installed."""

from pathlib import Path

from tools import collections_check


def test_every_used_collection_is_listed_and_installed() -> None:
    problems = collections_check.problems()
    assert not problems, "\n".join(problems)


def test_scanner_sees_modules_lookups_and_callbacks(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.yml"
    tasks.write_text(
        "- name: x\n  acme.widgets.frob: {}\n"
        "- name: y\n  ansible.builtin.debug:\n"
        "    msg: \"{{ lookup('community.general.random_string') }}\"\n"
    )
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\ncallbacks_enabled = ansible.posix.profile_tasks\n")
    used = collections_check.used_collections({"community"}, [tasks, cfg])
    assert set(used) == {"acme.widgets", "community.general", "ansible.posix"}


def test_requirements_parser(tmp_path: Path) -> None:
    req = tmp_path / "requirements.yml"
    req.write_text("collections:\n  - name: a.b\n    version: '>=1'\n  - c.d\n")
    assert collections_check.required_collections(req) == {"a.b", "c.d"}
