"""The djdeploy_linear strategy (playbooks/strategy_plugins/djdeploy_linear.py): Mitogen when
it is importable and allowed, plain linear for plays on the controller, FQCN connections
mapped to the short names Mitogen replaces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategy

PATH = Path(__file__).resolve().parents[2] / "playbooks/strategy_plugins/djdeploy_linear.py"


def load_strategy(monkeypatch: pytest.MonkeyPatch, mitogen: str) -> ModuleType:
    """The plugin imported afresh with DJDEPLOY_MITOGEN=mitogen."""
    monkeypatch.setenv("DJDEPLOY_MITOGEN", mitogen)
    # Importing the plugin patches DataLoader (the vars file cache): undone after the test.
    monkeypatch.setattr(DataLoader, "load_from_file", DataLoader.load_from_file)
    name = f"djdeploy_linear_under_test_{mitogen}"
    spec = importlib.util.spec_from_file_location(name, PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_fqcn_connections_and_become_methods_map_to_mitogens_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = load_strategy(monkeypatch, "1")
    assert plugin.short_name("community.docker.docker") == "docker"
    assert plugin.short_name("ansible.builtin.ssh") == "ssh"
    assert plugin.short_name("ansible.builtin.sudo") == "sudo"
    assert plugin.short_name("community.general.lxd") == "community.general.lxd"
    calls: list[tuple[Any, ...]] = []
    get = plugin.aliased(lambda name, *args, **kwargs: calls.append((name, args, kwargs)))
    get("community.docker.docker", "ctx", class_only=True)
    get("mitogen_ssh")
    assert calls == [("docker", ("ctx",), {"class_only": True}), ("mitogen_ssh", (), {})]


@pytest.mark.parametrize(
    ("value", "wanted"),
    [("1", True), ("", True), ("0", False), ("false", False), (" No ", False)],
)
def test_djdeploy_mitogen_0_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, value: str, wanted: bool
) -> None:
    plugin = load_strategy(monkeypatch, "1")
    assert plugin.mitogen_wanted({"DJDEPLOY_MITOGEN": value}) is wanted
    assert plugin.mitogen_wanted({}) is True


def test_with_mitogen_remote_plays_get_its_mixin_and_the_aliases_are_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mitogen_strategy = pytest.importorskip("ansible_mitogen.strategy")
    mitogen_connection = pytest.importorskip("ansible_mitogen.connection")
    plugin = load_strategy(monkeypatch, "1")
    assert plugin.StrategyModule.__mro__[1:3] == (mitogen_strategy.StrategyMixin, LinearStrategy)
    assert "community.docker.docker" in mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS
    methods = mitogen_connection.CONNECTION_METHOD
    assert methods["ansible.builtin.ssh"] is methods["ssh"]
    assert methods["ansible.builtin.sudo"] is methods["sudo"]
    # Loading it again does not stack a second alias layer or duplicate the names.
    before = tuple(mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS)
    load_strategy(monkeypatch, "1")
    assert tuple(mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS) == before


def test_without_mitogen_it_is_plain_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert plugin.StrategyModule.__mro__[1] is LinearStrategy


@pytest.mark.parametrize(
    ("connection", "local"),
    [("local", True), ("ansible.builtin.local", True), ("ssh", False), (None, False)],
)
def test_a_local_play_runs_on_plain_linear(
    monkeypatch: pytest.MonkeyPatch, connection: str | None, local: bool
) -> None:
    pytest.importorskip("ansible_mitogen.strategy")
    plugin = load_strategy(monkeypatch, "1")
    ran: list[str] = []
    monkeypatch.setattr(LinearStrategy, "run", lambda self, it, ctx, result=0: ran.append("linear"))
    mixin = plugin.StrategyModule.__mro__[1]
    monkeypatch.setattr(mixin, "run", lambda self, it, ctx, result=0: ran.append("mitogen"))
    iterator = SimpleNamespace(_play=SimpleNamespace(connection=connection))
    plugin.StrategyModule.run(object.__new__(plugin.StrategyModule), iterator, None)
    assert ran == ["linear" if local else "mitogen"]


@pytest.mark.parametrize(
    ("args", "value"),
    [
        (["-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=/k"], "accept-new"),
        (["-oStrictHostKeyChecking=no"], "no"),
        (["-o", "stricthostkeychecking yes", "-o", "StrictHostKeyChecking=no"], "yes"),
        (["-o", "ProxyCommand=docker exec -i %h sshd -i"], None),
        ([], None),
    ],
)
def test_the_first_strict_host_key_checking_of_the_ssh_args_is_read(
    monkeypatch: pytest.MonkeyPatch, args: list[str], value: str | None
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert plugin.strict_host_key_checking(args) == value


@pytest.mark.parametrize(
    ("args", "policy"),
    [
        (["-o", "StrictHostKeyChecking=accept-new"], "accept"),
        (["-o", "StrictHostKeyChecking=no"], "ignore"),
        (["-o", "StrictHostKeyChecking=yes"], "enforce"),
        (["-o", "StrictHostKeyChecking=bogus"], "enforce"),
        ([], "enforce"),
    ],
)
def test_mitogen_keeps_the_inventorys_host_key_policy(
    monkeypatch: pytest.MonkeyPatch, args: list[str], policy: str
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    connect = plugin.keeping_host_key_policy(
        lambda spec: {"method": "ssh", "kwargs": {"check_host_keys": "enforce", "ssh_args": spec}}
    )
    assert connect(args)["kwargs"]["check_host_keys"] == policy


def test_with_mitogen_its_ssh_method_keeps_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    mitogen_connection = pytest.importorskip("ansible_mitogen.connection")
    load_strategy(monkeypatch, "1")
    assert mitogen_connection.CONNECTION_METHOD["ssh"].__name__ == "connect_ssh"
    assert mitogen_connection.CONNECTION_METHOD["ansible.builtin.ssh"].__name__ == "connect_ssh"


class CountingLoader(DataLoader):  # type: ignore[misc]
    """Ansible's DataLoader, counting the files it really parses."""

    parsed: list[str]

    def load(self, data: Any, file_name: str = "<string>", *args: Any, **kwargs: Any) -> Any:
        self.parsed.append(file_name)
        return super().load(data, file_name, *args, **kwargs)


def counting_loader(plugin: ModuleType, project: Path) -> Any:
    loader_class = type("Loader", (CountingLoader,), {"parsed": []})
    plugin.install_vars_file_cache(loader_class, project)
    plugin.install_vars_file_cache(loader_class, project)  # a second load stacks nothing
    return loader_class()


def test_the_projects_vars_files_are_parsed_once_per_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    project = tmp_path / "playbooks"
    project.mkdir()
    wiring = project / "wiring.yml"
    wiring.write_text("djdeploy_serial: '{{ release_serial }}'\n")
    outside = tmp_path / "elsewhere.yml"
    outside.write_text("answer: 42\n")
    loader = counting_loader(plugin, project)
    # How VariableManager.get_vars reads a play's vars_files, once per task and host.
    first = loader.load_from_file(str(wiring), unsafe=True, cache="vaulted")
    again = loader.load_from_file(str(wiring), unsafe=True, cache="vaulted")
    assert first == {"djdeploy_serial": "{{ release_serial }}"}
    assert again is first
    assert loader.parsed == [str(wiring)]
    # A file outside the project, or another kind of call, is parsed as Ansible would.
    loader.load_from_file(str(outside), unsafe=True, cache="vaulted")
    loader.load_from_file(str(outside), unsafe=True, cache="vaulted")
    loader.load_from_file(str(wiring), cache="none")
    assert loader.parsed == [str(wiring), str(outside), str(outside), str(wiring)]


def test_loading_the_plugin_installs_the_cache_on_ansibles_loader_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = DataLoader.load_from_file
    plugin = load_strategy(monkeypatch, "0")
    installed = DataLoader.load_from_file
    assert installed is not original
    assert getattr(installed, "_djdeploy_project_cache", None) == plugin.PLAYBOOK_DIR
    load_strategy(monkeypatch, "0")
    assert DataLoader.load_from_file is installed
    assert PATH.parents[1] == plugin.PLAYBOOK_DIR
