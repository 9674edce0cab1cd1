"""Strategy djdeploy_linear: Ansible's linear strategy, run through Mitogen when installed.

Ansible spends most of a djdeploy run on per-task overhead: every task starts a fresh Python
on the host (and, over the docker connection, a ``docker exec``). Mitogen (PyPI ``mitogen``)
keeps one interpreter per host and user for the whole run and sends modules to it, which
makes a run of many small tasks several times faster. The order of tasks, their results and
the hosts' state are the same as with ``linear``.

This strategy is ``linear`` with these rules on top:

- **Mitogen only when it is importable.** Without the package this is exactly Ansible's
  ``linear``: nothing to install for a user who does not want it.
- **Plays on the controller stay plain.** A play whose connection is ``local`` (Molecule's
  create and destroy, which poll ``async`` docker tasks) runs on ``linear``, where Mitogen's
  local transport has nothing to save and its ``async`` polling has hung.
- **The inventory's host key policy is kept.** Mitogen puts its own
  ``StrictHostKeyChecking`` (from ``host_key_checking``) before the inventory's SSH arguments,
  and ssh takes the first; a ``StrictHostKeyChecking`` in ``ansible_ssh_common_args`` (the
  demo's ``accept-new`` with its own known_hosts, the stack scenario's ``no``) is turned into
  Mitogen's matching setting instead.
- **Fully qualified connection names are understood.** Mitogen replaces only short names
  (``ssh``, ``docker``, ``local``); the collection and Molecule name them
  ``ansible.builtin.ssh`` and ``community.docker.docker``. They are mapped to the short ones
  so those hosts get Mitogen too.

- **The project's vars files are read once per run.** Ansible parses a play's ``vars_files``
  again each time it computes a host's variables, once per task and host, unless the file is
  vaulted. ``playbooks/wiring.yml`` (every app-level play's ``vars_files``) cost about 11 ms a
  parse, 0.6 s of controller time in a release and more in a ``site.yml`` run. Files under
  the project's ``playbooks/`` directory are kept parsed for the run, as Ansible keeps
  vaulted ones; they are part of the project and no task writes them. The playbook's parse
  computes a play's variables for every import, before the strategy loads: the vars plugin
  ``djdeploy_early`` loads this module with the inventory, so the cache is there already.

- **A task whose ``when`` is false is skipped without a worker.** Ansible forks a worker
  process for every task and host, and the worker decides whether the task is skipped: about
  0.1 s of controller CPU for each, a third of a no-op ``site.yml`` being skips. The strategy
  evaluates ``when`` first, the way the worker does (the same variables, play context and
  search path), and when it is false sends the worker's own result (``skipped``,
  ``false_condition``) through the same queue, so callbacks, ``register`` and the recap see
  what they saw before. Anything else is left to the executor (a worker, or this process as
  below), which evaluates ``when`` itself: tasks with a loop, a ``delegate_to`` or
  ``run_once``, handlers, a ``when`` that is true, and any evaluation that raises or warns
  (the executor then reports it as it always did).

- **A task that never reaches the host runs in the strategy's process.** ``assert``, ``fail``,
  ``set_fact``, ``debug`` and ``validate_argument_spec`` (every role's implicit first task) work
  on the variables alone, yet Ansible forks a worker for each: 60-120 ms of controller time
  apiece, about 60 of the 146 tasks of a no-op ``site.yml``. The strategy runs Ansible's own
  TaskExecutor on a copy of the task (a forked worker works on a copy too) and sends its
  result through the same queue. Tasks with a loop, ``delegate_to``, ``run_once``, ``async``
  or ``until``, and handlers, still go to a worker.

- **Through Mitogen, a task only one host runs also runs in the strategy's process.** A forked
  worker costs more than the task: a ``ping`` took 50-60 ms through a worker and 20 ms here,
  and most tasks of a single-host run, and of the db and balancer plays of a multi-host one,
  have one host. When the lockstep batch of a task holds one host (so nothing runs beside it
  anyway) and the play goes through Mitogen (whose connections live in its multiplexer
  process; the executor's connection is a client of it, opened and closed per task as in a
  worker), the task runs in this process like a controller-only one, loops and
  ``delegate_to`` included (the executor runs the items in turn and reports each through the
  results queue, and works out the delegated host's variables, as in a worker). So does a
  task with ``run_once: true`` in a batch of any size, and one whose action bypasses the host
  loop (``add_host``): linear queues it for one host only.
  Not for handlers, ``async`` or ``until``, a task with a ``timeout`` (a worker's alarm
  signal) or an action that resets or waits for the connection or reads the terminal
  (KEEP_WORKER_ACTIONS). Tasks of two or more hosts still go to workers, side by side.
  A rolling release's balancer rotation (one host per batch, delegated to each balancer) and
  its run-once steps (the migration) took 50-70 ms more each through a worker.

- **Template strings are compiled once per run.** ansible-core 2.19 compiles a template string
  again each time it is templated, and a run templates the same strings (task arguments,
  conditions, variables) task after task: about 15 % of a no-op run's controller time. Jinja's
  compiled code of a string is kept (caching_compiled_strings) and bound to the environment
  that asks, as Jinja does with its own bytecode cache. Expressions (``when``, ``that``,
  ``failed_when``...) are compiled from a parsed tree, not a string: their code is kept by
  their source too (caching_compiled_expressions); a multi-host release evaluated about 160,
  a third of them distinct. ``DJDEPLOY_TEMPLATE_CACHE=0`` turns both off.

- **Mitogen pins its processes to CPUs only from 4 CPUs.** Its policy puts the connection
  multiplexer on CPU 0 and Ansible's process, every worker and every SSH client on the other
  CPUs: on 2 or 3 CPUs all of Ansible then shares one core while the multiplexer, mostly
  waiting, has one to itself, and the workers of a multi-host task run one after the other.
  Below 4 CPUs the strategy turns the pinning off (the kernel places the processes);
  ``DJDEPLOY_MITOGEN_PIN=1`` or ``0`` decides either way. On the bench's 2 cores, alternating
  runs: the multi-host release 7.67 s pinned, 7.40 s not (medians of 4, no load; 8.9-9.2 s
  against 8.5-8.8 s under load), the layout task 0.59 s against 0.36 s; the single-host
  release the same (5.00 s and 5.06 s).

- **Mitogen's multiplexer prepares the first connection's modules while the run starts.**
  Each new connection gets Mitogen's preloaded modules (``ansible.module_utils.basic``,
  Mitogen's runner and what they import: 66 modules), which the multiplexer reads, minifies,
  compresses and scans the first time, and before each new module it sends, it compiles the
  module and every ``module_utils`` file it imports to find them (ansible-core's
  ``basic`` again for every module). A thread started with the multiplexer makes Mitogen's
  first stage (``mitogen.core``, minified, which the first SSH client waits for), builds the
  preload and compiles ``basic``'s imports while the run's first tasks and SSH handshakes go
  on, and the scans keep each compiled source for the run. Measured on the bench's single host,
  alternating runs (3 each, no load): the first connection 0.78 -> 0.55 s, a release 4.90 ->
  4.46 s, a rollback 2.86 -> 2.55 s, a no-op ``site.yml`` (about 25 modules) 9.20 -> 7.86 s.
  ``DJDEPLOY_MITOGEN_WARM=0`` turns both off.

- **The project's modules run in the host's interpreter.** Mitogen forks a child on the host
  for every task of a module that imports custom ``module_utils``, which every module of the
  release role does: each such task paid a fork and a fresh import of Ansible's
  ``module_utils`` (9 tasks of a multi-host release, 4 of a single-host one). When the only
  reason to fork is ``module_utils`` of the project's own roles (unique names), the module runs
  in the interpreter like Ansible's builtin ones; ``async`` tasks,
  ``mitogen_task_isolation: fork`` and other modules fork as before. The multi-host release on
  the bench, alternating runs without load (8 each): 6.44 -> 6.20 s (medians).
  ``DJDEPLOY_MITOGEN_IN_PROCESS=0`` turns it off.

The executor gets a copy of the task with its parent blocks but not their task lists (a forked
worker has all of them, at no cost; copying them cost 10-40 ms a task in a role's block).

``DJDEPLOY_MITOGEN=0`` in the environment turns Mitogen off without uninstalling it (to
compare, or to rule it out when a run misbehaves); ``DJDEPLOY_WORKER_FREE_SKIPS=0`` sends every
task to a worker again (skips, controller-only tasks and tasks of one host). The vars file
cache does not depend on it.
"""

from __future__ import annotations

import builtins
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ansible
from ansible._internal._display_utils import DeferredWarningContext
from ansible._internal._task import TaskContext
from ansible._internal._templating._engine import TemplateEngine
from ansible._internal._templating._jinja_bits import (
    _TEMPLATE_OVERRIDE_FIELD_NAMES,
    AnsibleEnvironment,
    _TemplateCompileContext,
)
from ansible.executor.task_executor import TaskExecutor
from ansible.executor.task_result import _RawTaskResult
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.handler import Handler
from ansible.plugins import loader as plugin_loader
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategy
from jinja2.environment import TemplateExpression

DOCUMENTATION = r"""
---
name: djdeploy_linear
short_description: Ansible's linear strategy, through Mitogen when it is installed
description:
  - Runs tasks in order on every host, like C(ansible.builtin.linear).
  - When the C(mitogen) package is importable and C(DJDEPLOY_MITOGEN) is not C(0), remote
    hosts are driven through Mitogen (one persistent interpreter per host and user), with
    fully qualified connection names (C(ansible.builtin.ssh), C(community.docker.docker))
    mapped to the transports Mitogen replaces. Plays with a C(local) connection always run on
    plain C(linear).
author: djdeploy maintainers
"""

#: Fully qualified connection and become plugin names, and the short names Mitogen handles.
FQCN_ALIASES: dict[str, str] = {
    "ansible.builtin.ssh": "ssh",
    "ansible.builtin.local": "local",
    "community.docker.docker": "docker",
    "ansible.builtin.sudo": "sudo",
    "ansible.builtin.su": "su",
}

#: Connection names of plays that run on the controller itself.
LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local"})


def short_name(name: str) -> str:
    """The short plugin name Mitogen knows for ``name`` (unchanged when it has none)."""
    return FQCN_ALIASES.get(name, name)


def switched_on(environ: dict[str, str] | os._Environ[str], name: str) -> bool:
    """Whether the environment leaves a feature on (``<name>=0``, ``false`` or ``no``: off)."""
    return environ.get(name, "1").strip().lower() not in {"0", "false", "no"}


def mitogen_wanted(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the environment allows Mitogen (``DJDEPLOY_MITOGEN=0`` turns it off)."""
    return switched_on(environ, "DJDEPLOY_MITOGEN")


def play_is_local(play: Any) -> bool:
    """Whether a play runs on the controller: its connection is ``local``."""
    return str(getattr(play, "connection", "") or "") in LOCAL_CONNECTIONS


#: Mitogen's check_host_keys for each StrictHostKeyChecking value of ssh.
HOST_KEY_POLICIES: dict[str, str] = {
    "yes": "enforce",
    "accept-new": "accept",
    "ask": "accept",
    "no": "ignore",
    "off": "ignore",
}


def strict_host_key_checking(ssh_args: list[str]) -> str | None:
    """The first StrictHostKeyChecking value in ssh arguments (``-o K=V``, ``-oK=V``, ``-o K V``,
    lowercased), or None when they set none."""
    options = [
        ssh_args[i + 1] if arg == "-o" and i + 1 < len(ssh_args) else arg[2:]
        for i, arg in enumerate(ssh_args)
        if arg.startswith("-o")
    ]
    for option in options:
        key, _, value = option.replace("=", " ", 1).partition(" ")
        if key.strip().lower() == "stricthostkeychecking":
            return value.strip().lower()
    return None


def keeping_host_key_policy(connect: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Mitogen's SSH connection method, with check_host_keys from the SSH arguments' own
    StrictHostKeyChecking when they set one Mitogen knows."""

    def connect_ssh(spec: Any) -> Any:
        method = connect(spec)
        kwargs = method["kwargs"]
        policy = HOST_KEY_POLICIES.get(strict_host_key_checking(kwargs.get("ssh_args") or []) or "")
        if policy is not None:
            kwargs["check_host_keys"] = policy
        return method

    return connect_ssh


def aliased(get_with_context: Callable[..., Any]) -> Callable[..., Any]:
    """Mitogen's connection loader wrapper, asked with the short name of the plugin."""

    def get_short(name: str, *args: Any, **kwargs: Any) -> Any:
        return get_with_context(short_name(name), *args, **kwargs)

    return get_short


#: The project's playbook directory (this file is in its strategy_plugins/).
PLAYBOOK_DIR = Path(__file__).resolve().parent.parent


def is_within(path: str, directory: Path) -> bool:
    """Whether ``path`` (absolute) is ``directory`` (already resolved) or below it, after
    resolving the path's links."""
    return Path(path).resolve().is_relative_to(directory)


def caching_project_files(
    load_from_file: Callable[..., Any], directory: Path
) -> Callable[..., Any]:
    """DataLoader.load_from_file, keeping the files under ``directory`` parsed for the run.

    Ansible asks for a play's vars files with ``cache="vaulted"`` and ``unsafe=True``: it
    keeps a vaulted file's parsed data (and hands out that same object, not a copy) but
    parses a plain one again on every call. For the project's own files, which do not change
    during a run, the plain ones are treated like the vaulted ones. Other calls are passed on
    unchanged."""
    root = directory.resolve()  # once: this runs for every task and host

    def load(self: Any, file_name: str, *args: Any, **kwargs: Any) -> Any:
        if (
            not args
            and kwargs.get("cache") == "vaulted"
            and kwargs.get("unsafe")
            and is_within(self.path_dwim(file_name), root)
        ):
            kwargs["cache"] = "all"
        return load_from_file(self, file_name, *args, **kwargs)

    load._djdeploy_project_cache = directory  # type: ignore[attr-defined]
    return load


def install_vars_file_cache(loader_class: type[Any], directory: Path) -> None:
    """Make ``loader_class`` keep ``directory``'s vars files parsed (installed once: loading
    the plugin again, as Ansible does for each play, stacks nothing)."""
    current = loader_class.load_from_file
    if getattr(current, "_djdeploy_project_cache", None) != directory:
        loader_class.load_from_file = caching_project_files(current, directory)


#: How many compiled template strings the run keeps (then it starts over).
COMPILED_TEMPLATES_KEPT = 4096


def compile_settings(environment: Any) -> tuple[Any, ...]:
    """What, besides the source, decides the code Jinja compiles a template string to in
    ``environment``: its class and code generator, sandboxing, optimizer, async mode,
    autoescape, finalize, extensions, the lexer's settings (Ansible's template overrides) and
    Ansible's backslash escaping of the current compile."""
    context = _TemplateCompileContext.current(optional=True)
    return (
        type(environment),
        environment.code_generator_class,
        environment.sandboxed,
        environment.optimized,
        environment.is_async,
        environment.autoescape,
        environment.finalize,
        tuple(sorted(environment.extensions)),
        tuple(getattr(environment, name) for name in _TEMPLATE_OVERRIDE_FIELD_NAMES),
        context.escape_backslashes if context is not None else None,
    )


def caching_compiled_strings(
    compile_: Callable[..., Any], kept: int = COMPILED_TEMPLATES_KEPT
) -> Callable[..., Any]:
    """Environment.compile, keeping the code of the template strings it compiled for the run.

    ansible-core 2.19 compiles every template string again each time it is templated (a new
    environment per templating engine, no cache), and a task's arguments, conditions and
    variables are the same strings task after task: about 15 % of a no-op run's controller
    time. The code object Jinja compiles a string to depends only on the string and the
    environment's settings (compile_settings); Jinja binds it to the asking environment
    afterwards (``Template.from_code``), as it does with its own bytecode cache for templates
    from a loader. Only plain string sources without a name or file are kept (what
    ``from_string`` compiles), not while Ansible's template debugging is on, and not a compile
    that fails (it raises again next time)."""

    def compile(
        self: Any,
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        if (
            not isinstance(source, str)
            or name is not None
            or filename is not None
            or raw
            or defer_init
            or self._debuggable_template_source
        ):
            captured = _expression_codes.get()
            if captured is None or isinstance(source, str):
                return compile_(self, source, name, filename, raw, defer_init)
            # An expression's parsed tree (caching_compiled_expressions): its code is caught
            # here, once (not again by a compile this one calls).
            token = _expression_codes.set(None)
            try:
                code = compile_(self, source, name, filename, raw, defer_init)
            finally:
                _expression_codes.reset(token)
            captured.append(code)
            return code
        key = (str.__str__(source), compile_settings(self))
        try:
            code = kept_codes.get(key)
        except TypeError:  # a setting that cannot be a key: compile as before
            return compile_(self, source, name, filename, raw, defer_init)
        if code is None:
            code = compile_(self, source, name, filename, raw, defer_init)
            if len(kept_codes) >= kept:
                kept_codes.clear()
            kept_codes[key] = code
        return code

    kept_codes: dict[tuple[Any, ...], Any] = {}
    compile._djdeploy_compile_cache = kept_codes  # type: ignore[attr-defined]
    return compile


#: The code compiled while caching_compiled_expressions compiles an expression (None outside).
_expression_codes: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "djdeploy_expression_codes", default=None
)


def caching_compiled_expressions(
    compile_expression_: Callable[..., Any], kept: int = COMPILED_TEMPLATES_KEPT
) -> Callable[..., Any]:
    """Environment.compile_expression, keeping the code of the expressions it compiled.

    Jinja parses an expression into a tree and compiles the tree, which the string cache
    (caching_compiled_strings, which must be installed too) cannot key on; a run evaluates the
    same conditions for every host and task (about 1 ms a compile). The code is caught as
    Jinja compiles the tree, kept by the expression's source and the environment's settings,
    and bound to the asking environment afterwards. Not while Ansible's template debugging is
    on; an expression that does not compile raises again next time."""

    def compile_expression(self: Any, source: Any, undefined_to_none: bool = True) -> Any:
        if not isinstance(source, str) or self._debuggable_template_source:
            return compile_expression_(self, source, undefined_to_none)
        key = (str.__str__(source), compile_settings(self))
        try:
            code = kept_codes.get(key)
        except TypeError:  # a setting that cannot be a key: compile as before
            return compile_expression_(self, source, undefined_to_none)
        if code is not None:
            template = self.template_class.from_code(self, code, self.make_globals(None), None)
            return TemplateExpression(template, undefined_to_none)
        captured: list[Any] = []
        token = _expression_codes.set(captured)
        try:
            expression = compile_expression_(self, source, undefined_to_none)
        finally:
            _expression_codes.reset(token)
        if len(captured) == 1:
            if len(kept_codes) >= kept:
                kept_codes.clear()
            kept_codes[key] = captured[0]
        return expression

    kept_codes: dict[tuple[Any, ...], Any] = {}
    compile_expression._djdeploy_compile_cache = kept_codes  # type: ignore[attr-defined]
    return compile_expression


def install_compile_cache(environment_class: type[Any]) -> None:
    """Make ``environment_class`` keep its compiled template strings and expressions
    (installed once)."""
    if not hasattr(environment_class.compile, "_djdeploy_compile_cache"):
        environment_class.compile = caching_compiled_strings(environment_class.compile)
    if not hasattr(environment_class.compile_expression, "_djdeploy_compile_cache"):
        environment_class.compile_expression = caching_compiled_expressions(
            environment_class.compile_expression
        )


def worker_free_skip(
    task: Any, host: Any, task_vars: dict[str, Any], play_context: Any, loader: Any
) -> dict[str, Any] | None:
    """The result a worker would return for ``task`` on ``host`` when its ``when`` is false,
    or None when the task has to go to a worker.

    Follows the worker's steps up to its conditional (TaskExecutor): the search path in the
    variables, the play context with the task's and the variables' overrides, its magic
    variables, then every condition of ``when`` (the task's, its blocks' and its role's). The
    result is the worker's: ``changed``, ``skipped``, ``skip_reason``, ``false_condition`` and
    ``_ansible_no_log``. None, so that a worker runs it as before, for a task without
    ``when``, with a loop, ``delegate_to`` or ``run_once``, for a handler, when the conditions
    hold, and when evaluating them raises or warns."""
    if (
        not task.when
        or task.loop_with
        or task.loop is not None
        or task.delegate_to is not None
        or task.run_once
        or isinstance(task, Handler)
    ):
        return None
    try:
        with TaskContext(task), DeferredWarningContext(variables=task_vars) as warnings:
            variables = dict(task_vars)
            search_path = task.get_search_path()
            if loader.get_basedir() not in search_path:
                search_path.append(loader.get_basedir())
            variables["ansible_search_path"] = search_path
            templar = TemplateEngine(loader=loader, variables=variables)
            context = play_context.set_task_and_variable_override(
                task=task, variables=variables, templar=templar
            )
            context.post_validate(templar=templar)
            if not context.remote_addr:
                context.remote_addr = host.address
            magic = variables.copy()
            context.update_vars(magic)
            false_condition: dict[str, Any] = {}
            if task._resolve_conditional(task.when, magic, result_context=false_condition):
                return None
            result = {
                "changed": False,
                "skipped": True,
                "skip_reason": "Conditional result was False",
            }
            result.update(false_condition)
            task.update_result_no_log(templar, result)
    except Exception:  # the worker evaluates it again and reports what it finds
        return None
    if warnings.get_warnings() or warnings.get_deprecation_warnings():
        return None
    return result


#: Actions whose plugin works on the task's variables alone and never reaches the host (their
#: builtin names only: a short name could be another collection's plugin).
CONTROLLER_ONLY_ACTIONS = frozenset(
    {
        "ansible.builtin.assert",
        "ansible.builtin.debug",
        "ansible.builtin.fail",
        "ansible.builtin.set_fact",
        "ansible.builtin.validate_argument_spec",
    }
)


def keeps_its_worker(task: Any) -> bool:
    """Whether ``task`` goes to a worker whatever its action and batch: it has ``async`` or
    ``until``, or is a handler."""
    return bool(task.async_val) or bool(task.until) or isinstance(task, Handler)


def needs_a_worker(task: Any) -> bool:
    """Whether a controller-only ``task`` still goes to a worker: it has ``delegate_to`` or
    ``run_once``, or keeps_its_worker."""
    return task.delegate_to is not None or bool(task.run_once) or keeps_its_worker(task)


def runs_in_process(task: Any) -> bool:
    """Whether ``task`` may run in the strategy's process: a controller-only action
    (CONTROLLER_ONLY_ACTIONS) without a loop, and not needs_a_worker."""
    return (
        task.action in CONTROLLER_ONLY_ACTIONS
        and not task.loop_with
        and task.loop is None
        and not needs_a_worker(task)
    )


#: Actions that keep their worker even for one host: they reset or wait for the connection, or
#: read the controller's terminal (short names too: excluding more is safe).
KEEP_WORKER_ACTIONS = frozenset(
    {
        f"{prefix}{name}"
        for prefix in ("", "ansible.builtin.", "ansible.legacy.")
        for name in ("reboot", "wait_for_connection", "pause")
    }
)


def runs_remote_in_process(task: Any) -> bool:
    """Whether ``task``, when it is the only host's of its batch or runs once, may run in the
    strategy's process through Mitogen: any action but KEEP_WORKER_ACTIONS, with or without a
    loop or ``delegate_to``, without a ``timeout``, and not keeps_its_worker."""
    return (
        task.action not in KEEP_WORKER_ACTIONS and not task.timeout and not keeps_its_worker(task)
    )


def bypasses_host_loop(task: Any) -> bool:
    """Whether ``task``'s action plugin sets BYPASS_HOST_LOOP (``add_host``): linear queues
    it for the batch's first host only, as with ``run_once``. A templated action, or one
    without an action plugin, does not count. Asked for every task of every host of a batch
    of several, so the loader is asked once per action and collection list (action_bypasses)."""
    collections = None if task.collections is None else tuple(task.collections)
    return action_bypasses(str(task.action), collections)


@functools.lru_cache(maxsize=512)
def action_bypasses(action: str, collections: tuple[str, ...] | None) -> bool:
    """Whether the action plugin ``action`` (looked up with ``collections``) sets
    BYPASS_HOST_LOOP. A class attribute: it does not change during a run."""
    try:
        plugin = plugin_loader.action_loader.get(
            action,
            class_only=True,
            collection_list=None if collections is None else list(collections),
        )
    except (KeyError, AttributeError, TypeError, ValueError):
        return False
    return bool(getattr(plugin, "BYPASS_HOST_LOOP", False))


def runs_once(task: Any) -> bool:
    """Whether ``task`` has ``run_once: true`` (itself or from a block or role), or its action
    bypasses the host loop: the strategy queues it for the batch's first host only. A
    templated ``run_once`` does not count."""
    return task.run_once is True or bypasses_host_loop(task)


def run_in_process(
    task: Any,
    host: Any,
    task_vars: dict[str, Any],
    play_context: Any,
    loader: Any,
    variable_manager: Any,
    final_q: Any,
) -> tuple[Any, dict[str, Any]]:
    """Run ``task`` on ``host`` the way a worker does (TaskExecutor, in the task's context),
    here. The executor templates the task and adds to its variables, so it gets a copy of both,
    as a forked worker has (the task with its parent blocks, without their lists of tasks:
    the executor never reads them); returns that copy and the result."""
    copy = task.copy(exclude_tasks=True)
    with TaskContext(copy):
        result = TaskExecutor(
            host,
            copy,
            dict(task_vars),
            play_context,
            loader,
            plugin_loader.get_plugin_loader_namespace(),
            final_q,
            variable_manager,
        ).run()
    return copy, result


class WorkerFreeSkips:
    """Strategy mixin: tasks whose ``when`` is false are reported skipped without a worker
    (``worker_free_skip``), controller-only tasks run in this process (``run_in_process``), and
    so does a task of one host when REMOTE_IN_PROCESS (the Mitogen strategy) and the play is
    not local; every other task is queued as before."""

    #: Whether tasks that reach a host may run in this process (through Mitogen only).
    REMOTE_IN_PROCESS = False
    #: Whether the current play is not local.
    _djdeploy_remote = False
    #: Whether the current lockstep batch is one host's, in a play that is not local.
    _djdeploy_one_host = False

    def _get_next_task_lockstep(self, hosts: Any, iterator: Any) -> Any:
        host_tasks = super()._get_next_task_lockstep(hosts, iterator)  # type: ignore[misc]
        self._djdeploy_remote = not play_is_local(getattr(iterator, "_play", None))
        self._djdeploy_one_host = len(host_tasks) == 1 and self._djdeploy_remote
        return host_tasks

    def _in_process(self, task: Any) -> bool:
        """Whether ``task`` (for the batch's host) runs in this process."""
        if runs_in_process(task):
            return True
        return (
            self.REMOTE_IN_PROCESS
            and (self._djdeploy_one_host or (self._djdeploy_remote and runs_once(task)))
            and runs_remote_in_process(task)
        )

    def _queue_task(
        self, host: Any, task: Any, task_vars: dict[str, Any], play_context: Any
    ) -> Any:
        if not switched_on(os.environ, "DJDEPLOY_WORKER_FREE_SKIPS"):
            return super()._queue_task(host, task, task_vars, play_context)  # type: ignore[misc]
        result = worker_free_skip(task, host, task_vars, play_context, self._loader)  # type: ignore[attr-defined]
        in_process = result is None and self._in_process(task)
        if result is None and not in_process:
            return super()._queue_task(host, task, task_vars, play_context)  # type: ignore[misc]
        # What _queue_task and the worker do around a result: the task is known by its host
        # and id before anything about it comes back (a loop's items are reported while it
        # runs, and the results thread finds their task there), callbacks see it start, the
        # strategy waits for one more result.
        self._queued_task_cache[(host.name, task._uuid)] = {  # type: ignore[attr-defined]
            "host": host,
            "task": task,
            "task_vars": task_vars,
            "play_context": play_context,
        }
        self._tqm.send_callback("v2_runner_on_start", host, task)  # type: ignore[attr-defined]
        done = task
        if in_process:
            done, result = run_in_process(
                task,
                host,
                task_vars,
                play_context,
                self._loader,  # type: ignore[attr-defined]
                self._variable_manager,  # type: ignore[attr-defined]
                self._final_q,  # type: ignore[attr-defined]
            )
        self._final_q.send_task_result(  # type: ignore[attr-defined]
            _RawTaskResult(host=host, task=done, return_data=result, task_fields=done.dump_attrs())
        )
        self._pending_results += 1  # type: ignore[attr-defined]
        return None


#: CPUs from which Mitogen's CPU pinning is kept by default (its policy then reserves one CPU
#: for the multiplexer and one for Ansible's process, and spreads the workers on the others).
PIN_FROM_CPUS = 4


def pinning_wanted(environ: dict[str, str] | os._Environ[str], cpus: int) -> bool:
    """Whether Mitogen pins its processes to CPUs: ``DJDEPLOY_MITOGEN_PIN`` says so when it is
    set (``0``, ``false`` or ``no``: off, as switched_on reads it); unset or empty, only on
    PIN_FROM_CPUS CPUs or more."""
    if environ.get("DJDEPLOY_MITOGEN_PIN", "").strip():
        return switched_on(environ, "DJDEPLOY_MITOGEN_PIN")
    return cpus >= PIN_FROM_CPUS


def choose_affinity(affinity: Any, pin: bool) -> None:
    """Keep Mitogen's CPU pinning (``pin``) or turn it off, in its ``affinity`` module.

    Mitogen pins the connection multiplexer to CPU 0, and Ansible's own process, every worker
    and every SSH client to the other CPUs: on 2 or 3 CPUs, all of Ansible shares one core
    (and the multiplexer, mostly waiting, has one of its own). Without pinning the kernel
    places them. Mitogen's policy is kept aside, so that a later load can put it back."""
    pinning = getattr(affinity, "_djdeploy_pinning", None)
    if pinning is None:
        pinning = affinity.policy
        affinity._djdeploy_pinning = pinning
    affinity.policy = pinning if pin else affinity.Policy()


def caching_code(compile_: Callable[..., Any]) -> Callable[..., Any]:
    """``compile`` for Mitogen's module dependency scan, keeping the code of each source.

    Before it sends a module to a host, Mitogen's multiplexer scans the module's imports
    (``ansible_mitogen.module_finder.scan``): it compiles the module and every
    ``module_utils`` file it imports, recursively, and keeps the result per module only. Each
    distinct module of a run compiled ``ansible.module_utils.basic`` and its imports again,
    40-60 ms apiece. The code of a source does not change: it is kept, keyed by the source
    itself, its name and the mode (other calls are passed on)."""
    kept: dict[tuple[bytes, str, str], Any] = {}

    def compile(source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(source, bytes) or not isinstance(filename, str):
            return compile_(source, filename, mode, *args, **kwargs)
        key = (source, filename, mode)
        code = kept.get(key)
        if code is None:
            code = kept[key] = compile_(source, filename, mode)
        return code

    compile._djdeploy_kept = kept  # type: ignore[attr-defined]
    return compile


def install_scan_cache(module_finder: Any) -> None:
    """Make Mitogen's module scan (``module_finder``) keep compiled sources (installed once):
    the module looks ``compile`` up in its globals before the builtins."""
    if not hasattr(getattr(module_finder, "compile", None), "_djdeploy_kept"):
        module_finder.compile = caching_code(builtins.compile)


def warm_responder(
    responder: Any,
    fullnames: Iterable[str],
    scan: Callable[[], Any],
    core: Callable[[], Any],
) -> None:
    """Prepare, in the multiplexer, what the first connection asks of it.

    ``core`` first: Mitogen's first stage, ``mitogen.core`` minified and compressed, which the
    multiplexer makes before it starts the first SSH client (70 ms of the first connection).
    Then every new connection gets ``fullnames`` (Mitogen's ``ContextService.ALWAYS_PRELOAD``)
    and their related modules, each package on the way: the responder reads, minifies and
    compresses every one and scans its imports the first time (about 0.25 s of CPU in a run).
    Done here, in a thread started with the multiplexer, it overlaps the first SSH handshake
    and the run's first tasks; Mitogen keeps each result, so the connection finds them ready.
    ``scan`` then compiles a module's ``module_utils`` for the scan cache. A failure here
    changes nothing: the connection does the work as before."""
    try:
        core()
        for fullname in fullnames:
            parts = fullname.split(".")
            for end in range(1, len(parts) + 1):
                built = responder._build_tuple(".".join(parts[:end]))
                for related in built[4]:
                    responder._build_tuple(related)
        scan()
    except Exception:  # an optimisation: the request does the work itself
        return


def warming_multiplexer(
    setup_services: Callable[[Any], None],
    preload: Iterable[str],
    scan: Callable[[], Any],
    core: Callable[[], Any],
) -> Callable[[Any], None]:
    """MuxProcess._setup_services, then a thread that warms the multiplexer's responder
    (warm_responder) while the run's first tasks and SSH handshakes go on."""

    def _setup_services(self: Any) -> None:
        setup_services(self)
        threading.Thread(
            target=warm_responder,
            args=(self.router.responder, tuple(preload), scan, core),
            name="djdeploy-warm",
            daemon=True,
        ).start()

    _setup_services._djdeploy_warm = True  # type: ignore[attr-defined]
    return _setup_services


def scan_a_builtin_module(module_finder: Any, ansible_dir: Path) -> Callable[[], Any]:
    """A scan of Ansible's ``ping`` module: it imports ``ansible.module_utils.basic``, which
    every module imports, so its scan compiles what every later scan shares."""
    module = ansible_dir / "modules" / "ping.py"
    search_path = (str(ansible_dir / "module_utils"),)

    def scan() -> Any:
        return module_finder.scan(
            module_name="ansible_module_ansible.builtin.ping",
            module_path=str(module),
            search_path=search_path,
        )

    return scan


def install_warm_up(
    process: Any, services: Any, module_finder: Any, parent: Any, ansible_dir: Path
) -> None:
    """Compile cache for Mitogen's module scans, and the warm-up thread in every multiplexer
    started from now on (installed once). ``parent`` is ``mitogen.parent`` (its first stage)."""
    install_scan_cache(module_finder)
    mux = process.MuxProcess
    if not getattr(mux._setup_services, "_djdeploy_warm", False):
        mux._setup_services = warming_multiplexer(
            mux._setup_services,
            services.ContextService.ALWAYS_PRELOAD,
            scan_a_builtin_module(module_finder, ansible_dir),
            parent.get_core_source_partial,
        )


#: The project's roles: their ``module_utils`` may run in Mitogen's long-lived interpreters.
ROLES_DIR = PLAYBOOK_DIR.parent / "roles"


def own_module_utils(custom: Iterable[Any], roles_dir: Path) -> bool:
    """Whether a module's custom ``module_utils`` (Mitogen's module map: ``(fullname, path,
    is_pkg)`` entries) exist and are all files of the project's roles (``roles_dir``)."""
    paths = [str(entry[1]) for entry in custom]
    return bool(paths) and all(is_within(path, roles_dir) for path in paths)


def forking_only_when_needed(
    should_fork: Callable[[Any], bool], base_should_fork: Callable[[Any], bool], roles_dir: Path
) -> Callable[[Any], bool]:
    """``NewStylePlanner.should_fork`` that runs the project's own modules in the host's
    interpreter instead of a forked child.

    Mitogen forks a fresh child for every task of a module with custom ``module_utils`` (it
    may not share a long-lived interpreter with another role's same-named file). Every module
    of the release role imports the role's ``module_utils``, so each of its tasks paid a fork
    and a fresh import of ``ansible.module_utils.basic`` on the host. When the only reason to
    fork is ``module_utils`` of the project's roles (whose names are unique: a unit test says
    so), the module runs in the interpreter like a builtin one; an ``async`` task
    (``base_should_fork``), ``mitogen_task_isolation: fork`` and Mitogen's always-forked
    modules still fork."""

    def _should_fork(planner: Any) -> bool:
        if (
            not base_should_fork(planner)
            and planner._inv.task_vars.get("mitogen_task_isolation") != "fork"
            and planner._inv.module_name not in planner.ALWAYS_FORK_MODULES
            and own_module_utils(planner.get_module_map()["custom"], roles_dir)
        ):
            return False
        return should_fork(planner)

    _should_fork._djdeploy_own = True  # type: ignore[attr-defined]
    return _should_fork


def install_in_process_modules(planner: Any, roles_dir: Path) -> None:
    """The project's own modules run in the host's interpreter (forking_only_when_needed),
    in Mitogen's ``planner`` module (installed once)."""
    style = planner.NewStylePlanner
    if not getattr(style.should_fork, "_djdeploy_own", False):
        style.should_fork = forking_only_when_needed(
            style.should_fork, planner.Planner.should_fork, roles_dir
        )


def _load_mitogen() -> Any:
    """Mitogen's strategy module with the FQCN aliases installed, or None without Mitogen."""
    if not mitogen_wanted(os.environ):
        return None
    try:
        import ansible_mitogen.affinity as mitogen_affinity
        import ansible_mitogen.connection as mitogen_connection
        import ansible_mitogen.module_finder as mitogen_module_finder
        import ansible_mitogen.planner as mitogen_planner
        import ansible_mitogen.process as mitogen_process
        import ansible_mitogen.services as mitogen_services
        import ansible_mitogen.strategy as mitogen_strategy
        import mitogen.parent as mitogen_parent
    except ImportError:
        return None
    choose_affinity(mitogen_affinity, pinning_wanted(os.environ, os.cpu_count() or 1))
    if switched_on(os.environ, "DJDEPLOY_MITOGEN_WARM"):
        install_warm_up(
            mitogen_process,
            mitogen_services,
            mitogen_module_finder,
            mitogen_parent,
            Path(ansible.__file__).parent,
        )
    if switched_on(os.environ, "DJDEPLOY_MITOGEN_IN_PROCESS"):
        install_in_process_modules(mitogen_planner, ROLES_DIR)
    if getattr(mitogen_strategy, "_djdeploy_aliases", False):
        return mitogen_strategy
    methods = mitogen_connection.CONNECTION_METHOD
    for name in ("ssh", "smart"):
        methods[name] = keeping_host_key_policy(methods[name])
    for fqcn, short in FQCN_ALIASES.items():
        if short in methods:
            methods.setdefault(fqcn, methods[short])
    redirected = tuple(mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS)
    mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS = redirected + tuple(
        fqcn for fqcn, short in FQCN_ALIASES.items() if short in redirected
    )
    mitogen_strategy.wrap_connection_loader__get_with_context = aliased(
        mitogen_strategy.wrap_connection_loader__get_with_context
    )
    mitogen_strategy._djdeploy_aliases = True
    return mitogen_strategy


install_vars_file_cache(DataLoader, PLAYBOOK_DIR)
if switched_on(os.environ, "DJDEPLOY_TEMPLATE_CACHE"):
    install_compile_cache(AnsibleEnvironment)
_MITOGEN = _load_mitogen()

if _MITOGEN is None:

    class StrategyModule(WorkerFreeSkips, LinearStrategy):  # type: ignore[misc]
        """Ansible's linear strategy (Mitogen is not installed or is turned off)."""

else:
    _Mixin: Any = _MITOGEN.StrategyMixin

    class StrategyModule(WorkerFreeSkips, _Mixin, LinearStrategy):  # type: ignore[misc,no-redef]
        """Ansible's linear strategy through Mitogen, except for plays on the controller."""

        REMOTE_IN_PROCESS = True

        def run(self, iterator: Any, play_context: Any, result: int = 0) -> Any:
            """Run the play: plain linear when it is local, through Mitogen otherwise."""
            if play_is_local(getattr(iterator, "_play", None)):
                return LinearStrategy.run(self, iterator, play_context)
            return super().run(iterator, play_context)
