"""ansible.cfg and the plays' fact gathering: every setting of ansible.cfg is one that
ansible-core or the plugin it configures knows (ansible-core ignores the others without a word:
its removed gather_subset made every play gather all facts), every play that gathers facts
gathers the same subsets, and those gather every fact the project reads."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import yaml
from ansible import constants
from ansible.module_utils.facts import default_collectors
from ansible.plugins.loader import (
    callback_loader,
    connection_loader,
    fragment_loader,
    vars_loader,
)
from ansible.utils.plugin_docs import get_docstring

ROOT = Path(__file__).resolve().parents[2]

#: What the plays gather (gather_subset).
SUBSETS = ["min", "network"]
#: The collectors of the "min" subset (ansible.builtin.setup's minimal_gather_subset).
MIN_COLLECTORS = frozenset(
    {
        "apparmor", "caps", "cmdline", "date_time", "distribution", "dns", "env", "fips",
        "local", "lsb", "pkg_mgr", "platform", "python", "selinux", "service_mgr",
        "ssh_pub_keys", "user",
    }
)  # fmt: skip

#: The plugins ansible.cfg configures in sections of their own.
PLUGINS = (
    ("default", callback_loader),
    ("ssh", connection_loader),
    ("host_group_vars", vars_loader),
)


def known_settings() -> set[tuple[str, str]]:
    """The (section, key) pairs ansible-core and the configured plugins read from ansible.cfg
    (the plugins' from their documentation: loading them through Ansible's loaders would keep
    them there for the other tests)."""
    definitions: list[dict[str, Any]] = list(
        constants.config.get_configuration_definitions().values()
    )
    for name, loader in PLUGINS:
        path = loader.find_plugin(name)
        assert path is not None, name
        doc = get_docstring(path, fragment_loader)[0]
        definitions += doc["options"].values()
    return {
        (entry["section"], entry["key"])
        for definition in definitions
        for entry in definition.get("ini") or []
    }


def test_every_setting_of_ansible_cfg_is_one_ansible_reads() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "ansible.cfg")
    settings = {(section, key) for section in parser.sections() for key in parser[section]}
    assert settings, "ansible.cfg has no settings"
    assert sorted(settings - known_settings()) == []


def plays() -> list[tuple[str, dict[str, Any]]]:
    """Every play of the project's playbooks (imports of other playbooks are not plays)."""
    found = []
    for path in [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]:
        for item in yaml.safe_load(path.read_text()) or []:
            if isinstance(item, dict) and "hosts" in item:
                found.append((f"{path.name}: {item.get('name')}", item))
    return found


def test_every_play_gathers_no_facts_or_the_same_subsets() -> None:
    found = plays()
    assert len(found) > 10
    wrong = [
        name
        for name, play in found
        if play.get("gather_facts") is not False and play.get("gather_subset") != SUBSETS
    ]
    assert wrong == []


def gathered_facts() -> set[str]:
    """The names of the facts the SUBSETS gather (each collector's name and its facts)."""
    wanted = MIN_COLLECTORS | set(SUBSETS)
    return {
        fact
        for collector in default_collectors.collectors
        if collector.name in wanted
        for fact in collector._fact_ids | {collector.name}
    }


def test_the_subsets_gather_every_fact_the_project_reads() -> None:
    read = set()
    for path in [ROOT / "site.yml", ROOT / "playbooks", ROOT / "roles", ROOT / "group_vars"]:
        for file in [path] if path.is_file() else path.rglob("*"):
            if file.suffix in {".yml", ".j2"}:
                read.update(re.findall(r"ansible_facts\[['\"](\w+)['\"]\]", file.read_text()))
    assert {"distribution", "default_ipv4"} <= read
    assert sorted(read - gathered_facts()) == []
