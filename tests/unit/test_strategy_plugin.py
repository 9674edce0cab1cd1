"""The djdeploy_linear strategy (playbooks/strategy_plugins/djdeploy_linear.py): Mitogen when
it is importable and allowed, plain linear for plays on the controller, FQCN connections
mapped to the short names Mitogen replaces."""

from __future__ import annotations

import builtins
import importlib.util
import json
import sys
import threading
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
    # Importing the plugin patches DataLoader (the vars file cache) and, with Mitogen,
    # Mitogen's multiplexer and module scan (the warm-up) and its planner (the project's
    # modules in the host's interpreter): undone after the test.
    monkeypatch.setattr(DataLoader, "load_from_file", DataLoader.load_from_file)
    try:
        import ansible_mitogen.module_finder as module_finder
        import ansible_mitogen.planner as planner
        import ansible_mitogen.process as process
    except ImportError:
        pass
    else:
        mux = process.MuxProcess
        monkeypatch.setattr(mux, "_setup_services", mux._setup_services)
        monkeypatch.setattr(module_finder, "compile", builtins.compile, raising=False)
        style = planner.NewStylePlanner
        monkeypatch.setattr(style, "should_fork", style.should_fork)
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
    assert plugin.StrategyModule.__mro__[1:4] == (
        plugin.WorkerFreeSkips,
        mitogen_strategy.StrategyMixin,
        LinearStrategy,
    )
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
    assert plugin.StrategyModule.__mro__[1:3] == (plugin.WorkerFreeSkips, LinearStrategy)


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
    mixin = plugin.StrategyModule.__mro__[2]
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


# --- tasks whose `when` is false are skipped without a worker -------------------------------


PLUGIN_LOADER: list[bool] = []


def compiled_tasks(play_tasks: list[dict[str, Any]], tmp: Path) -> tuple[Any, Any, Any, list[Any]]:
    """A real play on an inventory of one host: (host, variable manager, play context, its
    tasks in order, blocks flattened, each with its parents)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.playbook.play import Play
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import init_plugin_loader
    from ansible.vars.manager import VariableManager

    if not PLUGIN_LOADER:  # resolves ansible.builtin.* as ansible-playbook does (once)
        init_plugin_loader()
        PLUGIN_LOADER.append(True)
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources="web1,")
    variables = VariableManager(loader=loader, inventory=inventory)
    # From a file, as ansible-playbook reads a playbook: its strings are trusted templates.
    playbook = tmp / "play.yml"
    playbook.write_text(
        json.dumps(
            {"hosts": "all", "gather_facts": False, "vars": {"flag": False}, "tasks": play_tasks}
        )
    )
    data = loader.load_from_file(str(playbook), trusted_as_template=True)
    play = Play.load(data, variable_manager=variables, loader=loader)
    tasks: list[Any] = []

    def walk(blocks: list[Any]) -> None:
        for block in blocks:
            for item in block.block:
                if hasattr(item, "block"):
                    walk([item])
                elif item.action not in ("meta", "ansible.builtin.meta"):
                    tasks.append(item)

    walk(play.compile())
    host = inventory.get_host("web1")
    return host, (loader, variables, play), PlayContext(play=play), tasks


def skip_of(
    plugin: ModuleType, tmp: Path, task_ds: dict[str, Any], block_when: str | None = None
) -> Any:
    """worker_free_skip for the play's one user task (inside a block with block_when)."""
    tasks = [task_ds] if block_when is None else [{"block": [task_ds], "when": block_when}]
    host, (loader, variables, play), context, compiled = compiled_tasks(tasks, tmp)
    task = next(t for t in compiled if t.get_name() == task_ds["name"])
    task_vars = variables.get_vars(play=play, host=host, task=task)
    return plugin.worker_free_skip(task, host, task_vars, context, loader)


def debug(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.debug": {"msg": "x"}, **fields}


def command(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.command": {"argv": ["true"]}, **fields}


def test_a_false_when_gives_the_workers_skip_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert skip_of(plugin, tmp_path, debug("t", when="flag")) == {
        "changed": False,
        "skipped": True,
        "skip_reason": "Conditional result was False",
        "false_condition": "flag",
        "_ansible_no_log": False,
    }
    # The first false condition of a list, and one inherited from the block.
    listed = skip_of(plugin, tmp_path, debug("t", when=["not flag", "inventory_hostname == 'db1'"]))
    assert listed["false_condition"] == "inventory_hostname == 'db1'"
    assert skip_of(plugin, tmp_path, debug("t"), block_when="flag")["false_condition"] == "flag"
    assert (
        skip_of(plugin, tmp_path, debug("t", when="flag", no_log=True))["_ansible_no_log"] is True
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},  # no when
        {"when": "not flag"},  # true
        {"when": "flag", "loop": [1, 2]},  # per item, in the worker
        {"when": "flag", "delegate_to": "localhost"},
        {"when": "flag", "run_once": True},
        {"when": "no_such_variable"},  # the worker reports the error as before
    ],
)
def test_every_other_task_goes_to_a_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fields: dict[str, Any]
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert skip_of(plugin, tmp_path, debug("t", **fields)) is None


class FakeStrategy:
    """What WorkerFreeSkips uses of a strategy, and the _queue_task it falls back to."""

    def __init__(self) -> None:
        self._loader = DataLoader()
        self._variable_manager: Any = None
        self._queued_task_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._pending_results = 0
        self.sent: list[Any] = []
        self.callbacks: list[str] = []
        self.queued: list[Any] = []
        self.item_callbacks: list[str] = []
        self._final_q = SimpleNamespace(
            send_task_result=self.sent.append, send_callback=self._send_callback
        )
        self._tqm = SimpleNamespace(send_callback=lambda name, *args: self.callbacks.append(name))

    def _queue_task(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> None:
        self.queued.append(task)

    def _send_callback(self, name: str, task_result: Any) -> None:
        """A loop item's result: the results thread finds its task by host and id (Ansible's
        _convert_wire_task_result_to_raw), while the task still runs."""
        self._queued_task_cache[(task_result.host.name, task_result.task._uuid)]
        self.item_callbacks.append(name)


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_skip_is_reported_through_the_results_queue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, switch: str
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    monkeypatch.setenv("DJDEPLOY_WORKER_FREE_SKIPS", switch)

    class Strategy(plugin.WorkerFreeSkips, FakeStrategy):  # type: ignore[name-defined,misc]
        pass

    host, (_loader, variables, play), context, tasks = compiled_tasks(
        [debug("skipped", when="flag"), command("runs", when="not flag")], tmp_path
    )
    strategy = Strategy()
    for task in tasks:
        strategy._queue_task(
            host, task, variables.get_vars(play=play, host=host, task=task), context
        )
    if switch == "0":  # DJDEPLOY_WORKER_FREE_SKIPS=0: every task to a worker
        assert [t.get_name() for t in strategy.queued] == ["skipped", "runs"]
        assert strategy.sent == []
        return
    assert [t.get_name() for t in strategy.queued] == ["runs"]
    [result] = strategy.sent
    assert result.host is host and result.task.get_name() == "skipped"
    assert result._return_data["skipped"] is True
    assert result.task_fields["name"] == "skipped"
    assert strategy._pending_results == 1
    assert strategy.callbacks == ["v2_runner_on_start"]
    assert strategy._queued_task_cache[("web1", tasks[0]._uuid)]["task"] is tasks[0]


def one_task(tmp: Path, task_ds: dict[str, Any]) -> Any:
    _host, _vars, _context, compiled = compiled_tasks([task_ds], tmp)
    return next(t for t in compiled if t.get_name() == task_ds["name"])


@pytest.mark.parametrize(
    "action", ["assert", "debug", "fail", "set_fact", "validate_argument_spec"]
)
def test_controller_only_builtin_actions_run_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, action: str
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    task = {"name": "t", f"ansible.builtin.{action}": {}}
    assert plugin.runs_in_process(one_task(tmp_path, task))


@pytest.mark.parametrize(
    "task_ds",
    [
        command("t"),  # reaches the host
        {"name": "t", "debug": {"msg": "x"}},  # a short name could be another collection's
        debug("t", loop=[1, 2]),
        debug("t", delegate_to="localhost"),
        debug("t", run_once=True),
        debug("t", until="true", retries=2),
        {"name": "t", "ansible.builtin.set_fact": {"a": 1}, "async": 10, "poll": 1},
    ],
)
def test_other_tasks_do_not_run_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_ds: dict[str, Any]
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert not plugin.runs_in_process(one_task(tmp_path, task_ds))


#: The connection a play's tasks get from ansible-playbook's defaults (a bare play has none).
LOCAL = {"connection": "local"}


def test_controller_only_tasks_run_here_and_report_through_the_results_queue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plugin = load_strategy(monkeypatch, "0")

    class Strategy(plugin.WorkerFreeSkips, FakeStrategy):  # type: ignore[name-defined,misc]
        pass

    host, (loader, variables, play), context, tasks = compiled_tasks(
        [
            {
                "name": "holds",
                "ansible.builtin.assert": {"that": ["not flag"], "quiet": True},
                **LOCAL,
            },
            {
                "name": "fact",
                "ansible.builtin.set_fact": {"seen": "{{ inventory_hostname }}-{{ flag }}"},
                **LOCAL,
            },
            {
                "name": "fails",
                "ansible.builtin.assert": {"that": ["flag"], "fail_msg": "flag is off"},
                **LOCAL,
            },
            command("remote"),
        ],
        tmp_path,
    )
    strategy = Strategy()
    strategy._loader = loader
    strategy._variable_manager = variables
    for task in tasks:
        strategy._queue_task(
            host, task, variables.get_vars(play=play, host=host, task=task), context
        )
    assert [t.get_name() for t in strategy.queued] == ["remote"]
    results = {r.task.get_name(): r for r in strategy.sent}
    assert set(results) == {"holds", "fact", "fails"}
    assert strategy._pending_results == 3
    assert strategy.callbacks == ["v2_runner_on_start"] * 3
    assert not results["holds"]._return_data.get("failed")
    assert results["fact"]._return_data["ansible_facts"] == {"seen": "web1-False"}
    assert results["fails"]._return_data["failed"] is True
    assert results["fails"]._return_data["msg"] == "flag is off"
    for task in tasks[:3]:
        # Known by the original task (the results thread finds it by host and id) ...
        assert strategy._queued_task_cache[("web1", task._uuid)]["task"] is task
    # ... which the executor did not template: it worked on a copy, as a worker does.
    fact = next(t for t in tasks if t.get_name() == "fact")
    assert fact.args == {"seen": "{{ inventory_hostname }}-{{ flag }}"}
    assert results["fact"].task is not fact and results["fact"].task._uuid == fact._uuid


# --- through Mitogen, a task of one host runs in the strategy's process ----------------------


@pytest.mark.parametrize(
    ("task_ds", "expected"),
    [
        (command("t"), True),
        ({"name": "t", "ansible.builtin.copy": {"content": "x", "dest": "/tmp/x"}}, True),
        ({"name": "t", "ansible.builtin.include_tasks": "other.yml"}, True),
        (command("t", loop=[1, 2]), True),
        (command("t", with_items=[1, 2]), True),
        (command("t", delegate_to="localhost"), True),
        (command("t", delegate_to="{{ item }}", loop=["lb1", "lb2"]), True),
        (command("t", run_once=True), True),
        (command("t", until="true", retries=2), False),
        (command("t", timeout=5), False),
        ({**command("t"), "async": 10, "poll": 1}, False),
        ({"name": "t", "ansible.builtin.reboot": {}}, False),
        ({"name": "t", "wait_for_connection": {}}, False),
        ({"name": "t", "ansible.builtin.pause": {"seconds": 1}}, False),
    ],
)
def test_which_tasks_of_one_host_may_run_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_ds: dict[str, Any], expected: bool
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    assert plugin.runs_remote_in_process(one_task(tmp_path, task_ds)) is expected


class LockstepOf:
    """A strategy whose lockstep returns the given batch (what linear's would)."""

    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch

    def _get_next_task_lockstep(self, hosts: Any, iterator: Any) -> list[Any]:
        return self.batch


@pytest.mark.parametrize(
    ("batch", "connection", "one_host"),
    [
        ([("web1", "t")], "ssh", True),
        ([("web1", "t")], "ansible.builtin.ssh", True),
        ([("web1", "t"), ("web2", "t")], "ssh", False),
        ([], "ssh", False),
        ([("localhost", "t")], "local", False),
    ],
)
def test_the_batch_is_one_hosts_when_the_lockstep_returns_one_remote_host(
    monkeypatch: pytest.MonkeyPatch, batch: list[Any], connection: str, one_host: bool
) -> None:
    plugin = load_strategy(monkeypatch, "0")

    class Strategy(plugin.WorkerFreeSkips, LockstepOf):  # type: ignore[name-defined,misc]
        pass

    strategy = Strategy(batch)
    iterator = SimpleNamespace(_play=SimpleNamespace(connection=connection))
    assert strategy._get_next_task_lockstep([], iterator) == batch
    assert strategy._djdeploy_one_host is one_host
    assert strategy._djdeploy_remote is (connection != "local")


@pytest.mark.parametrize(("remote", "one_host"), [(True, True), (True, False), (False, True)])
def test_a_task_of_one_host_runs_here_only_through_mitogen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, remote: bool, one_host: bool
) -> None:
    plugin = load_strategy(monkeypatch, "0")

    class Strategy(plugin.WorkerFreeSkips, FakeStrategy):  # type: ignore[name-defined,misc]
        REMOTE_IN_PROCESS = remote

    # The local connection stands in for Mitogen's: the executor runs the module for real.
    marker = tmp_path / "ran"
    host, (loader, variables, play), context, tasks = compiled_tasks(
        [
            {
                "name": "remote",
                "ansible.builtin.command": {"argv": ["touch", str(marker)]},
                "vars": {"ansible_python_interpreter": sys.executable},
                **LOCAL,
            },
            {
                "name": "looped",
                "ansible.builtin.command": {"argv": ["touch", "{{ marker }}-{{ item }}"]},
                "loop": [1, 2],
                "vars": {"ansible_python_interpreter": sys.executable, "marker": str(marker)},
                **LOCAL,
            },
            {
                "name": "delegated",
                "ansible.builtin.command": {"argv": ["touch", f"{marker}-delegated"]},
                "delegate_to": "localhost",
                "vars": {"ansible_python_interpreter": sys.executable},
                **LOCAL,
            },
            {**command("retried", until="true", retries=2), **LOCAL},
        ],
        tmp_path,
    )
    strategy = Strategy()
    strategy._loader = loader
    strategy._variable_manager = variables
    strategy._djdeploy_one_host = one_host
    for task in tasks:
        strategy._queue_task(
            host, task, variables.get_vars(play=play, host=host, task=task), context
        )
    if not (remote and one_host):
        assert [t.get_name() for t in strategy.queued] == [
            "remote",
            "looped",
            "delegated",
            "retried",
        ]
        assert not list(tmp_path.glob("ran*"))
        return
    assert [t.get_name() for t in strategy.queued] == ["retried"]
    result, looped, delegated = strategy.sent
    assert result.task.get_name() == "remote", result._return_data
    assert result._return_data["rc"] == 0, result._return_data
    assert result._return_data["changed"] is True and marker.exists()
    # A loop: each item ran, and was reported as a worker reports it, then the whole.
    assert looped.task.get_name() == "looped"
    assert [r["item"] for r in looped._return_data["results"]] == [1, 2]
    assert {p.name for p in tmp_path.glob("ran-*")} == {"ran-1", "ran-2", "ran-delegated"}
    # Delegated: the executor ran it on the delegated host and says so, as a worker does.
    assert delegated.task.get_name() == "delegated", delegated._return_data
    assert delegated._return_data["_ansible_delegated_vars"]["ansible_delegated_host"] == (
        "localhost"
    )
    assert strategy.item_callbacks == ["v2_runner_item_on_ok"] * 2
    assert strategy._pending_results == 3
    assert strategy.callbacks == ["v2_runner_on_start"] * 3
    assert strategy._queued_task_cache[("web1", tasks[0]._uuid)]["task"] is tasks[0]


@pytest.mark.parametrize(
    ("run_once", "remote_play", "in_process"),
    [(True, True, True), (True, False, False), (False, True, False), ("{{ flag }}", True, False)],
)
def test_a_task_that_runs_once_runs_here_whatever_the_batch(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    run_once: Any,
    remote_play: bool,
    in_process: bool,
) -> None:
    plugin = load_strategy(monkeypatch, "0")

    class Strategy(plugin.WorkerFreeSkips, FakeStrategy):  # type: ignore[name-defined,misc]
        REMOTE_IN_PROCESS = True

    marker = tmp_path / "once"
    host, (loader, variables, play), context, (task,) = compiled_tasks(
        [
            {
                "name": "once",
                "ansible.builtin.command": {"argv": ["touch", str(marker)]},
                "run_once": run_once,
                "vars": {"ansible_python_interpreter": sys.executable},
                **LOCAL,
            }
        ],
        tmp_path,
    )
    strategy = Strategy()
    strategy._loader = loader
    strategy._variable_manager = variables
    # A batch of several hosts: linear queues a run_once task for the first one only.
    strategy._djdeploy_one_host = False
    strategy._djdeploy_remote = remote_play
    strategy._queue_task(host, task, variables.get_vars(play=play, host=host, task=task), context)
    assert marker.exists() is in_process
    assert [t.get_name() for t in strategy.queued] == ([] if in_process else ["once"])
    assert len(strategy.sent) == (1 if in_process else 0)


def test_add_host_runs_here_whatever_the_batch_as_linear_queues_it_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plugin = load_strategy(monkeypatch, "0")

    class Strategy(plugin.WorkerFreeSkips, FakeStrategy):  # type: ignore[name-defined,misc]
        REMOTE_IN_PROCESS = True

    host, (loader, variables, play), context, (task, command) = compiled_tasks(
        [
            {
                "name": "add",
                "ansible.builtin.add_host": {"name": "{{ item }}", "groups": "extra"},
                "loop": ["web9", "web8"],
                **LOCAL,
            },
            {"name": "other", "ansible.builtin.command": {"argv": ["true"]}, **LOCAL},
        ],
        tmp_path,
    )
    assert plugin.runs_once(task) and not plugin.runs_once(command)
    strategy = Strategy()
    strategy._loader = loader
    strategy._variable_manager = variables
    strategy._djdeploy_one_host = False
    strategy._djdeploy_remote = True
    strategy._queue_task(host, task, variables.get_vars(play=play, host=host, task=task), context)
    assert strategy.queued == []
    (result,) = strategy.sent
    added = [item["add_host"]["host_name"] for item in result._return_data["results"]]
    assert added == ["web9", "web8"]


def test_the_executor_gets_the_task_with_its_blocks_but_not_their_task_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    host, (loader, variables, _play), context, tasks = compiled_tasks(
        [{"block": [debug("first"), debug("second")], "become": True, **LOCAL}], tmp_path
    )
    task = tasks[0]
    seen: list[Any] = []

    class Executor:
        def __init__(self, host: Any, copy: Any, *args: Any) -> None:
            seen.append(copy)

        def run(self) -> dict[str, Any]:
            return {}

    monkeypatch.setattr(plugin, "TaskExecutor", Executor)
    copy, _result = plugin.run_in_process(
        task, host, {}, context, loader, variables, SimpleNamespace()
    )
    assert seen == [copy] and copy is not task and copy._uuid == task._uuid
    assert copy._parent is not task._parent and copy._parent.become is True
    # The block lists the original tasks: none of them was copied.
    assert [id(t) for t in copy._parent.block] == [id(t) for t in task._parent.block]


# --- compiled template strings are kept for the run ---------------------------------------


def counting_compile(plugin: ModuleType, kept: int = 4096) -> tuple[Any, list[Any]]:
    """The plugin's caching compile over Jinja's, and the sources Jinja really compiled."""
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    compiled: list[Any] = []
    original = AnsibleEnvironment.compile

    def jinja_compile(self: Any, source: Any, *args: Any) -> Any:
        compiled.append(source)
        return original(self, source, *args)

    return plugin.caching_compiled_strings(jinja_compile, kept), compiled


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The plugin's caching compile installed on AnsibleEnvironment for the test; the sources
    Jinja really compiled."""
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    compile_, sources = counting_compile(load_strategy(monkeypatch, "0"))
    monkeypatch.setattr(AnsibleEnvironment, "compile", compile_)
    return sources


def environment(**settings: Any) -> Any:
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    env = AnsibleEnvironment()
    return env.overlay(**settings) if settings else env


def test_a_template_string_is_compiled_once_and_bound_to_each_environment(
    compiled: list[Any],
) -> None:
    first, second = environment(), environment()
    one = first.from_string("{{ a }}-{{ b | default('x') }}")
    two = second.from_string("{{ a }}-{{ b | default('x') }}")
    assert compiled == ["{{ a }}-{{ b | default('x') }}"]
    assert one.environment is first and two.environment is second
    assert one.root_render_func is not two.root_render_func
    second.from_string("{{ a }}")
    assert compiled[-1] == "{{ a }}" and len(compiled) == 2


def test_other_settings_or_backslash_escaping_compile_again(compiled: list[Any]) -> None:
    from ansible._internal._templating._jinja_bits import _TemplateCompileContext

    source = "[[ a ]] {{ a }}"
    environment().from_string(source)
    environment(variable_start_string="[[", variable_end_string="]]").from_string(source)
    assert len(compiled) == 2
    with _TemplateCompileContext(escape_backslashes=True):
        environment().from_string(source)
    with _TemplateCompileContext(escape_backslashes=False):
        environment().from_string(source)
        environment().from_string(source)
    assert len(compiled) == 4


def test_named_sources_failures_and_debugging_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    plugin = load_strategy(monkeypatch, "0")
    compile_, compiled = counting_compile(plugin, kept=2)
    env = environment()
    for _ in range(2):
        compile_(env, "{{ a }}", "named.j2", "named.j2")
        with pytest.raises(Exception, match="unexpected"):
            compile_(env, "{{ a ) }}")
    assert len(compiled) == 4
    monkeypatch.setattr(AnsibleEnvironment, "_debuggable_template_source", True)
    compile_(env, "{{ a }}")
    compile_(env, "{{ a }}")
    assert len(compiled) == 6
    monkeypatch.setattr(AnsibleEnvironment, "_debuggable_template_source", False)
    # Full: it starts over rather than growing.
    for source in ("{{ a }}", "{{ b }}", "{{ c }}", "{{ a }}"):
        compile_(env, source)
    assert compiled[6:] == ["{{ a }}", "{{ b }}", "{{ c }}", "{{ a }}"]


def test_templating_engines_share_the_compiled_strings_and_keep_their_variables(
    compiled: list[Any],
) -> None:
    from ansible._internal._datatag._tags import TrustedAsTemplate
    from ansible._internal._templating._engine import TemplateEngine

    source = TrustedAsTemplate().tag("{{ app }}/{{ 'releases' }} \\ [[ app ]]")
    square = TrustedAsTemplate().tag(
        "#jinja2: variable_start_string:'[[', variable_end_string:']]'\n" + source
    )
    rendered = [
        TemplateEngine(variables={"app": app}).template(text)
        for text in (source, square, source, square)
        for app in ("/srv/a", "/srv/b")
    ]
    assert (
        rendered
        == [
            "/srv/a/releases \\ [[ app ]]",
            "/srv/b/releases \\ [[ app ]]",
            "{{ app }}/{{ 'releases' }} \\ /srv/a",
            "{{ app }}/{{ 'releases' }} \\ /srv/b",
        ]
        * 2
    )
    assert len(compiled) == 2


def test_loading_the_plugin_installs_the_compile_cache_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    monkeypatch.setattr(AnsibleEnvironment, "compile", AnsibleEnvironment.compile)
    monkeypatch.setattr(
        AnsibleEnvironment, "compile_expression", AnsibleEnvironment.compile_expression
    )
    plugin = load_strategy(monkeypatch, "0")
    installed = AnsibleEnvironment.compile, AnsibleEnvironment.compile_expression
    assert all(hasattr(method, "_djdeploy_compile_cache") for method in installed)
    plugin.install_compile_cache(AnsibleEnvironment)
    assert (AnsibleEnvironment.compile, AnsibleEnvironment.compile_expression) == installed


@pytest.fixture
def expressions(monkeypatch: pytest.MonkeyPatch, compiled: list[Any]) -> Any:
    """The plugin's caching compile_expression (keeping 4) over Jinja's, installed on
    AnsibleEnvironment for the test, over the caching compile of ``compiled`` (which records
    what Jinja really compiled)."""
    import jinja2
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    def jinja_compile_expression(self: Any, source: str, undefined_to_none: bool = True) -> Any:
        return jinja2.Environment.compile_expression(self, source, undefined_to_none)

    plugin = sys.modules["djdeploy_linear_under_test_0"]
    compile_expression = plugin.caching_compiled_expressions(jinja_compile_expression, 4)
    monkeypatch.setattr(AnsibleEnvironment, "compile_expression", compile_expression)
    return compile_expression


def test_an_expression_is_compiled_once_and_bound_to_each_environment(
    compiled: list[Any], expressions: Any
) -> None:
    first, second = environment(), environment()
    source = "a | default(1) > 1 and b is not defined"
    one = first.compile_expression(source, False)
    two = second.compile_expression(source, False)
    assert len(compiled) == 1  # the parsed tree, compiled once
    assert one._template.environment is first and two._template.environment is second
    assert one._template.root_render_func is not two._template.root_render_func
    # Jinja's undefined_to_none is the caller's, not the first compile's.
    assert first.compile_expression("missing")._undefined_to_none is True
    assert second.compile_expression("missing", False)._undefined_to_none is False
    assert len(compiled) == 2


def test_expressions_under_other_settings_debugging_or_in_error_compile_again(
    monkeypatch: pytest.MonkeyPatch, compiled: list[Any], expressions: Any
) -> None:
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    environment().compile_expression("a")
    environment(variable_start_string="[[", variable_end_string="]]").compile_expression("a")
    assert len(compiled) == 2
    for _ in range(2):
        with pytest.raises(Exception, match="unexpected"):
            environment().compile_expression("a )")
    monkeypatch.setattr(AnsibleEnvironment, "_debuggable_template_source", True)
    environment().compile_expression("b")
    environment().compile_expression("b")
    assert len(compiled) == 4
    monkeypatch.setattr(AnsibleEnvironment, "_debuggable_template_source", False)
    # "a" is kept (no compile); at "e" the cache is full (4 kept here): it starts over rather
    # than growing, and "a" compiles again.
    for source in ("a", "c", "d", "e", "a"):
        environment().compile_expression(source)
    assert len(compiled) == 4 + 4
    assert len(expressions._djdeploy_compile_cache) == 2  # "e", then "a" again


def test_conditions_of_templating_engines_share_the_compiled_code(
    compiled: list[Any], expressions: Any
) -> None:
    from ansible._internal._datatag._tags import TrustedAsTemplate
    from ansible._internal._templating._engine import TemplateEngine

    condition = TrustedAsTemplate().tag("app | length > 3 and 'x' in app")
    results = [
        TemplateEngine(variables={"app": app}).evaluate_conditional(condition)
        for app in ("xylophone", "abc", "abcd", "xy")
    ]
    assert results == [True, False, False, False]
    assert len(compiled) == 1


@pytest.mark.parametrize(
    ("pin", "cpus", "wanted"),
    [
        ("", 2, False),
        ("", 3, False),
        ("", 4, True),
        ("", 16, True),
        ("1", 2, True),
        (" yes ", 2, True),
        ("0", 16, False),
        ("false", 4, False),
    ],
)
def test_mitogen_pins_to_cpus_from_four_cpus_unless_told(
    monkeypatch: pytest.MonkeyPatch, pin: str, cpus: int, wanted: bool
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    environ = {"DJDEPLOY_MITOGEN_PIN": pin} if pin else {}
    assert plugin.pinning_wanted(environ, cpus) is wanted


@pytest.mark.parametrize(("pin", "pinned"), [("1", True), ("0", False)])
def test_mitogens_cpu_pinning_follows_djdeploy_mitogen_pin(
    monkeypatch: pytest.MonkeyPatch, pin: str, pinned: bool
) -> None:
    affinity = pytest.importorskip("ansible_mitogen.affinity")
    monkeypatch.setattr(affinity, "policy", affinity.policy)
    monkeypatch.delattr(affinity, "_djdeploy_pinning", raising=False)
    mitogens = affinity.policy
    monkeypatch.setenv("DJDEPLOY_MITOGEN_PIN", pin)
    load_strategy(monkeypatch, "1")
    assert (affinity.policy is mitogens) is pinned
    if not pinned:
        # Mitogen's base policy: every assign_* does nothing.
        assert type(affinity.policy) is affinity.Policy
    # Loading it again with pinning on puts Mitogen's own policy back.
    monkeypatch.setenv("DJDEPLOY_MITOGEN_PIN", "1")
    load_strategy(monkeypatch, "1")
    assert affinity.policy is mitogens


def test_a_source_is_compiled_once_for_the_module_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = load_strategy(monkeypatch, "0")
    calls: list[tuple[Any, ...]] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return builtins.compile(*args, **kwargs)

    compile_ = plugin.caching_code(counting)
    code = compile_(b"x = 1", "pkg.mod", "exec")
    assert compile_(b"x = 1", "pkg.mod", "exec") is code
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    assert namespace["x"] == 1
    assert len(calls) == 1
    # Another source, name or mode is compiled; a str source or extra arguments pass through.
    compile_(b"x = 2", "pkg.mod", "exec")
    compile_(b"x = 1", "pkg.other", "exec")
    compile_(b"1", "pkg.mod", "eval")
    compile_("x = 1", "pkg.mod", "exec")
    compile_(b"x = 1", "pkg.mod", "exec", 0)
    assert len(calls) == 6


def test_mitogens_scans_share_the_compiled_module_utils(monkeypatch: pytest.MonkeyPatch) -> None:
    module_finder = pytest.importorskip("ansible_mitogen.module_finder")
    import ansible

    ansible_dir = Path(ansible.__file__).parent
    search_path = (str(ansible_dir / "module_utils"),)
    plugin = load_strategy(monkeypatch, "0")

    def scan(name: str) -> Any:
        path = ansible_dir / "modules" / f"{name}.py"
        return module_finder.scan(f"ansible_module_{name}", str(path), search_path)

    expected = {name: scan(name) for name in ("ping", "command")}
    compiled: list[str] = []

    def counting(source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(filename)
        return builtins.compile(source, filename, mode, *args, **kwargs)

    monkeypatch.setattr(module_finder, "compile", plugin.caching_code(counting), raising=False)
    assert scan("ping") == expected["ping"]
    first = len(compiled)
    assert "ansible.module_utils.basic" in compiled
    assert scan("command") == expected["command"]
    # The second scan compiles the module itself and what ping's imports did not reach.
    assert compiled.count("ansible.module_utils.basic") == 1
    assert len(compiled) - first < first


class FakeResponder:
    """The part of Mitogen's ModuleResponder the warm-up uses: _build_tuple, whose fifth
    item lists the related modules."""

    def __init__(self, related: dict[str, list[str]], failing: str = "") -> None:
        self.related = related
        self.failing = failing
        self.built: list[str] = []

    def _build_tuple(self, fullname: str) -> tuple[Any, ...]:
        if fullname == self.failing:
            raise ImportError(fullname)
        self.built.append(fullname)
        return (fullname, None, "", b"", self.related.get(fullname, []))


def test_the_warm_up_builds_each_package_its_modules_and_their_related_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    responder = FakeResponder({"a.b.c": ["a.x", "d"], "e": ["a.x"]})
    scans: list[bool] = []
    # The first stage (mitogen.core) first: the first SSH client waits for it.
    plugin.warm_responder(
        responder,
        ["a.b.c", "e"],
        lambda: scans.append(True),
        lambda: responder.built.append("<core>"),
    )
    assert responder.built == ["<core>", "a", "a.b", "a.b.c", "a.x", "d", "e", "a.x"]
    assert scans == [True]
    # A failure stops the warm-up quietly: the connection's own request does the work.
    failing = FakeResponder({}, failing="a.b")
    plugin.warm_responder(failing, ["a.b.c", "e"], lambda: scans.append(True), lambda: None)
    assert failing.built == ["a"]
    assert scans == [True]


def test_mitogens_responder_keeps_what_the_warm_up_built(monkeypatch: pytest.MonkeyPatch) -> None:
    master = pytest.importorskip("mitogen.master")
    services = pytest.importorskip("ansible_mitogen.services")
    plugin = load_strategy(monkeypatch, "0")
    broker = master.Broker(install_watcher=False)
    try:
        router = master.Router(broker=broker)
        responder = router.responder
        responder.whitelist_prefix("ansible")
        responder.whitelist_prefix("ansible_mitogen")
        parent = pytest.importorskip("mitogen.parent")
        plugin.warm_responder(
            responder,
            services.ContextService.ALWAYS_PRELOAD,
            lambda: None,
            parent.get_core_source_partial,
        )
        # The first stage is made once per process: the first connection finds it.
        assert parent._core_source_partial is not None
        target = responder._cache["ansible_mitogen.target"]
        assert "ansible.module_utils.basic" in target[4]
        assert all(name in responder._cache for name in target[4])
        # What the request would build is what the warm-up kept.
        assert responder._build_tuple("ansible_mitogen.target") is target
    finally:
        broker.shutdown()
        broker.join()


def test_through_mitogen_every_multiplexer_warms_up_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = pytest.importorskip("ansible_mitogen.process")
    module_finder = pytest.importorskip("ansible_mitogen.module_finder")
    mux = process.MuxProcess
    setups: list[Any] = []
    monkeypatch.setattr(mux, "_setup_services", lambda self: setups.append(self))
    monkeypatch.setenv("DJDEPLOY_MITOGEN_WARM", "0")
    load_strategy(monkeypatch, "1")
    assert not hasattr(mux._setup_services, "_djdeploy_warm")
    assert not hasattr(module_finder.compile, "_djdeploy_kept")

    monkeypatch.setenv("DJDEPLOY_MITOGEN_WARM", "1")
    plugin = load_strategy(monkeypatch, "1")
    installed = mux._setup_services
    assert installed._djdeploy_warm
    assert module_finder.compile._djdeploy_kept == {}
    load_strategy(monkeypatch, "1")  # once per run, not stacked
    assert mux._setup_services is installed

    warmed = threading.Event()
    monkeypatch.setattr(plugin, "warm_responder", lambda *args: warmed.set())
    responder = FakeResponder({})
    fake_mux = SimpleNamespace(router=SimpleNamespace(responder=responder))
    mux._setup_services(fake_mux)
    assert setups == [fake_mux]
    assert warmed.wait(5)


def strategy_not_loaded_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """As before the vars plugin loads the strategy's module (without Mitogen): not loaded
    yet (None), and what loading it installs undone after the test."""
    monkeypatch.setenv("DJDEPLOY_MITOGEN", "0")
    monkeypatch.setattr(DataLoader, "load_from_file", DataLoader.load_from_file)
    monkeypatch.setitem(sys.modules, "ansible.plugins.strategy.djdeploy_linear", None)


def test_the_early_vars_plugin_installs_the_caches_and_gives_no_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strategy_not_loaded_yet(monkeypatch)
    path = PATH.parent.parent / "vars_plugins" / "djdeploy_early.py"
    spec = importlib.util.spec_from_file_location("djdeploy_early_under_test", path)
    assert spec is not None and spec.loader is not None
    early = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "djdeploy_early_under_test", early)
    assert not hasattr(DataLoader.load_from_file, "_djdeploy_project_cache")
    spec.loader.exec_module(early)
    # Its import loaded the strategy's module, which installed the vars file cache.
    assert DataLoader.load_from_file._djdeploy_project_cache == PATH.parent.parent.resolve()
    strategy = sys.modules["ansible.plugins.strategy.djdeploy_linear"]
    assert early.load_strategy() is strategy  # once per process
    # A strategy loader like Ansible's (a fresh one: the global one keeps what it loads), when
    # the first play starts, uses that module: no second copy.
    from ansible import constants
    from ansible.plugins.loader import PluginLoader

    loader = PluginLoader(
        "StrategyModule",
        "ansible.plugins.strategy",
        constants.DEFAULT_STRATEGY_PLUGIN_PATH,
        "strategy_plugins",
        required_base_class="StrategyBase",
    )
    loader.add_directory(str(PATH.parent))
    assert loader.get("djdeploy_linear", class_only=True) is strategy.StrategyModule
    assert early.VarsModule().get_vars(DataLoader(), "/", []) == {}


def test_the_early_vars_plugins_documentation_is_parsed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ansible hands a vars plugin out once per inventory source and host each time it computes
    # a host's variables; its loader parses the documentation again until the options are
    # registered, which needs an "options" key.
    from ansible import constants
    from ansible.plugins import loader as plugin_loader

    strategy_not_loaded_yet(monkeypatch)
    registered = constants.config._plugins.get("vars", {})
    monkeypatch.setitem(
        constants.config._plugins,
        "vars",
        {name: spec for name, spec in registered.items() if name != "djdeploy_early"},
    )
    parsed: list[str] = []
    real_load = plugin_loader.yaml.load

    def load(stream: Any, **options: Any) -> Any:
        parsed.append(str(stream))
        return real_load(stream, **options)

    monkeypatch.setattr(plugin_loader.yaml, "load", load)
    vars_loader = plugin_loader.PluginLoader(
        "VarsModule", "ansible.plugins.vars", constants.DEFAULT_VARS_PLUGIN_PATH, "vars_plugins"
    )
    vars_loader.add_directory(str(PATH.parent.parent / "vars_plugins"))
    for _ in range(3):
        assert vars_loader.get("djdeploy_early") is not None
    assert len([text for text in parsed if "name: djdeploy_early" in text]) == 1
    assert constants.config.has_configuration_definition("vars", "djdeploy_early")


ROLES = Path(__file__).resolve().parents[2] / "roles"
# A module map entry (fullname, path, is_pkg) of the release role's module_utils.
OURS = ("ansible.module_utils.djdeploy_files", str(ROLES / "release/module_utils/x.py"), False)


def planner_for(
    module: str, custom: list[tuple[str, str, bool]], task_vars: dict[str, Any] | None = None
) -> SimpleNamespace:
    """What should_fork reads of Mitogen's NewStylePlanner: the invocation and the module map."""
    return SimpleNamespace(
        _inv=SimpleNamespace(module_name=module, task_vars=task_vars or {}, wrap_async=False),
        ALWAYS_FORK_MODULES=frozenset({"ansible.builtin.dnf"}),
        get_module_map=lambda: {"builtin": ["ansible.module_utils.basic"], "custom": custom},
    )


def test_the_projects_modules_run_in_the_hosts_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = load_strategy(monkeypatch, "0")
    ours = [OURS]
    theirs = [("ansible.module_utils.other", "/elsewhere/module_utils/other.py", False)]
    asked: list[Any] = []

    def mitogens(planner: Any) -> bool:
        asked.append(planner)
        return True

    should_fork = plugin.forking_only_when_needed(
        mitogens, lambda planner: planner._inv.wrap_async, ROLES
    )
    assert should_fork(planner_for("djdeploy_switch", ours)) is False
    assert asked == []
    # Anything else is Mitogen's decision: no custom module_utils, another role's or a
    # collection's, a mix, an async task, mitogen_task_isolation, an always-forked module.
    others = [
        planner_for("ansible.builtin.copy", []),
        planner_for("other", theirs),
        planner_for("djdeploy_switch", ours + theirs),
        planner_for("djdeploy_switch", ours, {"mitogen_task_isolation": "fork"}),
        planner_for("ansible.builtin.dnf", ours),
    ]
    async_task = planner_for("djdeploy_switch", ours)
    async_task._inv.wrap_async = True
    for planner in [*others, async_task]:
        assert should_fork(planner) is True
    assert asked == [*others, async_task]


def test_a_path_outside_the_roles_is_not_the_projects_even_through_a_link(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = load_strategy(monkeypatch, "0").own_module_utils
    roles = tmp_path / "roles"
    (roles / "r/module_utils").mkdir(parents=True)
    (roles / "r/module_utils/djdeploy_a.py").write_text("")
    (tmp_path / "elsewhere.py").write_text("")
    (roles / "r/module_utils/djdeploy_b.py").symlink_to(tmp_path / "elsewhere.py")
    assert own([("a", str(roles / "r/module_utils/djdeploy_a.py"), False)], roles.resolve())
    assert not own([("b", str(roles / "r/module_utils/djdeploy_b.py"), False)], roles.resolve())
    assert not own([], roles.resolve())


def test_the_roles_module_utils_have_unique_names_of_their_own() -> None:
    # They share each host's interpreter for the run (forking_only_when_needed): two files of
    # one name would be one module there.
    names = [path.name for path in ROLES.glob("*/module_utils/*.py")]
    assert names
    assert len(names) == len(set(names))
    assert all(name.startswith("djdeploy_") for name in names)


def test_through_mitogen_the_planner_forks_only_when_needed_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planner = pytest.importorskip("ansible_mitogen.planner")
    style = planner.NewStylePlanner
    mitogens = style.should_fork
    monkeypatch.setenv("DJDEPLOY_MITOGEN_IN_PROCESS", "0")
    load_strategy(monkeypatch, "1")
    assert style.should_fork is mitogens

    monkeypatch.setenv("DJDEPLOY_MITOGEN_IN_PROCESS", "1")
    load_strategy(monkeypatch, "1")
    installed = style.should_fork
    assert installed._djdeploy_own
    load_strategy(monkeypatch, "1")  # once per run, not stacked
    assert style.should_fork is installed

    # Mitogen's own planner, with the module map its scan would give.
    ours = [OURS]
    theirs = [("ansible.module_utils.other", "/elsewhere/other.py", False)]
    for custom, forks in ((ours, False), (theirs, True)):
        invocation = SimpleNamespace(module_name="djdeploy_switch", task_vars={}, wrap_async=False)
        instance = style(invocation)
        instance._module_map = {"builtin": [], "custom": custom}
        assert instance.should_fork() is forks
