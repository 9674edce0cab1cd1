"""`djdeploy VERB ...`: one command per operation, thin over the project's playbooks.

Every verb reads the inventory with Ansible's own commands and runs a project playbook
(release, rollback, restart, releases, lock, backup, restore), ssh as the deploy user (run,
logs) or ansible-vault (config). Bad input is refused before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

import yaml

from djdeploy import PROJECT, ansible, inventory, vault
from djdeploy.errors import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INVENTORY,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SSH,
    EXIT_USAGE,
    CliError,
)

DEFAULT_INVENTORY = "inventories/local"
RELEASE_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
# A git branch, tag or commit as git check-ref-format would take it (no option-like names).
REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/@+-]+(?<![./])")
DUMP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.dump")
LOCKED = "is locked by"
DEFAULT_LINES = 100

VERBS = {
    "release": "build and release REF (default: the inventory's app_ref), host by host",
    "rollback": "switch back to the previous release, or RELEASE",
    "releases": "list the releases on each web host (* = live)",
    "restart": "restart on the live release: blue/green switch, no build",
    "run": "run a manage.py command on a web host (-i: interactive TTY)",
    "logs": "the app's journal from every app host (web, worker-only), lines prefixed by host",
    "config": "show the settings kept in the inventory's vault (app_config)",
    "config:set": "set KEY=VALUE settings in the vault, then apply them (same-release switch)",
    "config:unset": "remove settings from the vault, then apply",
    "ps": "what runs on each web host: release, colors, health, processes, timers",
    "scale": "set PROCESS=N instances per host in the inventory, then apply (no build)",
    "lock": "show the deploy lock on each web host (--break: remove it)",
    "maintenance": "maintenance mode on|off: nginx answers 503 with the maintenance page",
    "backup": "dump the database now on the db host",
    "restore": "restore the database from a dump (--confirm DATABASE)",
}


class Executor(Protocol):
    """How the CLI runs commands (tests pass a fake that records them)."""

    def capture(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None
    ) -> tuple[int, str, str]:
        """Run and return (exit code, stdout, stderr)."""
        ...

    def stream(self, argv: Sequence[str], env: Mapping[str, str], out: IO[str]) -> tuple[int, str]:
        """Run, copying its output to out as it comes; return (exit code, output)."""
        ...

    def attach(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Run on the caller's terminal (stdin, stdout, stderr inherited); return its code."""
        ...

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start with stdout and stderr piped (text)."""
        ...


class SubprocessExecutor:
    """The real executor: Ansible's commands run in the project directory."""

    def capture(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None
    ) -> tuple[int, str, str]:
        """Run and return (exit code, stdout, stderr)."""
        proc = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=ansible.cwd(),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def stream(self, argv: Sequence[str], env: Mapping[str, str], out: IO[str]) -> tuple[int, str]:
        """Run, copying its output to out as it comes; return (exit code, output)."""
        chunks: list[str] = []
        with subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=ansible.cwd(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                out.flush()
                chunks.append(line)
        return proc.returncode, "".join(chunks)

    def attach(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Run on the caller's terminal; return its exit code."""
        return subprocess.call(list(argv), env=dict(env))

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start with stdout and stderr piped (text, line-buffered)."""
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )


@dataclass
class Context:
    """One invocation: its arguments, environment, streams and executor."""

    args: argparse.Namespace
    executor: Executor
    env: dict[str, str]
    out: IO[str]
    err: IO[str]
    _inventory: inventory.Inventory | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        """Whether the verb prints its result as JSON on stdout."""
        return bool(self.args.json)

    @property
    def inventory_path(self) -> str:
        """The inventory, absolute (checked by resolve_inventory)."""
        return str(self.args.inventory)

    @property
    def progress(self) -> IO[str]:
        """Where Ansible's progress goes: stderr with --json (stdout holds the JSON)."""
        return self.err if self.json else self.out

    def groups(self) -> inventory.Inventory:
        """The inventory's groups (read once)."""
        if self._inventory is None:
            self._inventory = inventory.load(
                self.inventory_path, lambda argv: self.executor.capture(argv, self.env)
            )
        return self._inventory

    def hosts(self, names: Sequence[str]) -> dict[str, inventory.Host]:
        """Connection settings of hosts (templated by Ansible, nothing connects)."""
        env = ansible.json_env(self.env)
        return inventory.connect(
            self.inventory_path, names, lambda argv: self.executor.capture(argv, env)
        )

    def emit(self, data: Mapping[str, Any], text: Iterable[str]) -> None:
        """The verb's result: JSON (with --json) or lines of text."""
        if self.json:
            self.out.write(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
        else:
            for line in text:
                self.out.write(line + "\n")
        self.out.flush()


# --- Argument parsing --------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format and exit code for bad input."""

    def error(self, message: str) -> NoReturn:
        """Bad input: say what and how to fix it, exit EXIT_USAGE before anything runs."""
        self.print_usage(sys.stderr)
        sys.stderr.write(f"djdeploy: {message}\nfix: see `{self.prog} --help`\n")
        raise SystemExit(EXIT_USAGE)


def epilog() -> str:
    """The exit codes table and the inventory note, for --help."""
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (
        "exit codes:\n" + rows + "\n  run returns the command's own exit code.\n\n"
        "-i/--inventory may come before the verb or after it; after `run`, -i means "
        "--interactive (use --inventory there).\n"
        "The vault password: --vault-password-file FILE or ANSIBLE_VAULT_PASSWORD_FILE."
    )


def build_parser() -> Parser:
    """The parser of every verb."""
    parser = Parser(
        prog="djdeploy",
        description="Operate a djdeploy app: releases, one-off commands, logs, settings.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--inventory", default=DEFAULT_INVENTORY, help="inventory path")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--vault-password-file", default=None, help="ansible-vault password")

    def common(short_inventory: bool = True) -> Parser:
        shared = Parser(add_help=False)
        flags = ["-i", "--inventory"] if short_inventory else ["--inventory"]
        shared.add_argument(*flags, default=argparse.SUPPRESS, help="inventory path")
        shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        shared.add_argument("--vault-password-file", default=argparse.SUPPRESS)
        return shared

    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    def verb(name: str, short_inventory: bool = True) -> Parser:
        sub: Parser = verbs.add_parser(
            name, help=VERBS[name], description=VERBS[name], parents=[common(short_inventory)]
        )
        return sub

    p = verb("release")
    p.add_argument("ref", nargs="?", help="branch, tag or commit (default: app_ref)")
    p.add_argument("--force", action="store_true", help="rebuild even when the commit is live")
    p.add_argument("--break-lock", action="store_true", help="break a lock left by a dead run")

    p = verb("rollback")
    p.add_argument(
        "release_id", nargs="?", metavar="RELEASE", help="release id (default: previous)"
    )
    p.add_argument("--allow-migrations", action="store_true", help="past releases that migrated")
    p.add_argument("--break-lock", action="store_true", help="break a lock left by a dead run")

    verb("releases")
    verb("ps")
    p = verb("scale")
    p.add_argument("counts", nargs="+", metavar="PROCESS=N", help="instances per host (0: stop)")
    p.add_argument("--no-apply", action="store_true", help="only edit the inventory")

    p = verb("restart")
    p.add_argument("--break-lock", action="store_true", help="break a lock left by a dead run")

    p = verb("run", short_inventory=False)
    p.add_argument("-i", "--interactive", action="store_true", help="with a TTY (e.g. shell)")
    p.add_argument("--host", help="web host (default: the first)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the manage.py command")

    p = verb("logs")
    p.add_argument("-f", "--follow", action="store_true", help="keep following")
    p.add_argument("--since", help="journalctl --since (e.g. '10 min ago', 2026-12-02 10:00)")
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=None,
        help="last lines per host (default 100; all with --since)",
    )
    p.add_argument("--host", help="one web or worker-only host (default: all)")
    p.add_argument(
        "-p",
        "--process",
        help="web, a process of app_processes or a schedule of app_schedules (default: all)",
    )

    verb("config")
    p = verb("config:set")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--no-apply", action="store_true", help="only edit the vault")
    p = verb("config:unset")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--no-apply", action="store_true", help="only edit the vault")

    p = verb("lock")
    p.add_argument("--break", dest="break_lock", action="store_true", help="remove the lock")

    p = verb("maintenance")
    p.add_argument("state", choices=["on", "off"], help="on: 503 page; off: the app again")

    verb("backup")
    p = verb("restore")
    p.add_argument("backup", nargs="?", help="dump file name (default: the newest pre-migrate)")
    p.add_argument("--confirm", required=True, metavar="DATABASE", help="the database's name")
    return parser


def resolve_inventory(path: str) -> str:
    """The inventory as an absolute path: relative to the current directory, else to the
    project (the default inventories/local works from anywhere)."""
    for candidate in (Path(path), PROJECT / path):
        if candidate.exists():
            return str(candidate.resolve())
    raise CliError(
        f"the inventory {path} does not exist",
        "pass -i/--inventory with an inventory directory or hosts file (e.g. inventories/prod)",
        EXIT_INVENTORY,
    )


def validate(args: argparse.Namespace) -> None:
    """Checks argparse cannot make; all before anything runs (EXIT_USAGE)."""
    if args.verb == "release" and args.ref is not None and not REF.fullmatch(args.ref):
        raise CliError(
            f"{args.ref!r} is not a branch, tag or commit name",
            "pass a git ref such as main, v1.2.0 or a commit id",
            EXIT_USAGE,
        )
    if args.verb == "rollback" and args.release_id and not RELEASE_ID.fullmatch(args.release_id):
        raise CliError(
            f"{args.release_id!r} is not a release id",
            "release ids look like 20261202T101500Z-0123abcd; `djdeploy releases` lists them",
            EXIT_USAGE,
        )
    if args.verb == "run":
        command = list(args.command)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise CliError(
                "run needs a manage.py command after --",
                "e.g. djdeploy run -- migrate --plan, or djdeploy run -i -- shell",
                EXIT_USAGE,
            )
        args.command = command
        if args.interactive and args.json:
            raise CliError("--json does not go with -i (a TTY)", "drop one of them", EXIT_USAGE)
    if args.verb == "logs" and args.lines is not None and args.lines < 1:
        raise CliError("--lines must be at least 1", "e.g. -n 200", EXIT_USAGE)
    if args.verb == "config:set":
        args.assignments = vault.parse_assignments(args.assignments)
    if args.verb == "scale":
        args.counts = parse_counts(args.counts)
    if args.verb == "config:unset":
        args.keys = [vault.check_key(k) for k in args.keys]
    if args.verb == "restore" and args.backup is not None and not DUMP.fullmatch(args.backup):
        raise CliError(
            f"{args.backup!r} is not a dump file name",
            "give the file name only (e.g. 20261202T101500Z-0123abcd-pre-migrate.dump)",
            EXIT_USAGE,
        )


# --- Playbook verbs ----------------------------------------------------------------------


def run_playbook(
    ctx: Context, name: str, extra: dict[str, Any], *, report: bool = False
) -> dict[str, Any]:
    """Run a playbook with its progress shown; return its report (report=True). A failed run
    raises CliError (EXIT_LOCKED when another run holds the deploy lock)."""
    with tempfile.TemporaryDirectory(prefix="djdeploy-") as tmp:
        report_file = Path(tmp) / "report.json"
        if report:
            extra = {**extra, "djdeploy_report_file": str(report_file)}
        cmd = ansible.playbook(name, ctx.inventory_path, extra)
        rc, output = ctx.executor.stream(cmd, ctx.env, ctx.progress)
        data: dict[str, Any] = json.loads(report_file.read_text()) if report_file.exists() else {}
    if rc != 0:
        if LOCKED in output:
            raise CliError(
                f"{ctx.args.verb}: another run holds the deploy lock (see above)",
                "wait for it to end; if it died: djdeploy lock --break",
                EXIT_LOCKED,
            )
        raise CliError(
            f"{ctx.args.verb} failed (ansible-playbook {name} exited {rc}); the cause is the "
            "failed task's message above",
            "fix what it names and run the verb again; hosts that had not switched keep serving "
            "their live release",
            EXIT_FAILED,
        )
    return data


def switch_verb(ctx: Context, name: str, extra: dict[str, Any]) -> int:
    """release, rollback, restart: run the playbook, then print its summary."""
    if getattr(ctx.args, "break_lock", False):
        extra["release_break_lock"] = True
    data = run_playbook(ctx, name, extra, report=True)
    ctx.emit(
        {"verb": ctx.args.verb, "ok": True, "report": data},
        ["", f"djdeploy {ctx.args.verb}: done", *data.get("summary", [])],
    )
    return EXIT_OK


def do_release(ctx: Context) -> int:
    """`release [REF]`."""
    extra: dict[str, Any] = {}
    if ctx.args.ref:
        extra["app_ref"] = ctx.args.ref
    if ctx.args.force:
        extra["release_force"] = True
    return switch_verb(ctx, "release.yml", extra)


def do_rollback(ctx: Context) -> int:
    """`rollback [RELEASE]`."""
    extra: dict[str, Any] = {}
    if ctx.args.release_id:
        extra["release_rollback_to"] = ctx.args.release_id
    if ctx.args.allow_migrations:
        extra["release_rollback_allow_migrations"] = True
    return switch_verb(ctx, "rollback.yml", extra)


def do_restart(ctx: Context) -> int:
    """`restart`."""
    return switch_verb(ctx, "restart.yml", {})


def read_run(ctx: Context, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Run a short playbook with the JSON callback and return its document."""
    cmd = ansible.playbook(name, ctx.inventory_path, extra)
    rc, out, err = ctx.executor.capture(cmd, ansible.json_env(ctx.env))
    try:
        doc = ansible.parse_json_run(out)
    except ValueError as exc:
        raise CliError(
            f"{ctx.args.verb}: ansible-playbook {name} printed no result: {err.strip()[-600:]}",
            "check the inventory (-i/--inventory) and the vault password",
            EXIT_INVENTORY,
        ) from exc
    if rc != 0:
        failed = ansible.failures(doc)
        lines = "; ".join(f"{h}: {m}" for h, m in failed.items()) or err.strip()[-600:]
        raise CliError(
            f"{ctx.args.verb} failed: {lines}",
            "fix what it names (an unreachable host: check SSH to it as the deploy user)",
            EXIT_FAILED,
        )
    return doc


def releases_by_host(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """Every web host's releases (the djdeploy_releases module's list)."""
    doc = read_run(ctx, "releases.yml", {})
    results = ansible.task_results(doc, "Releases | Read the releases")
    return {host: list(r.get("releases") or []) for host, r in results.items()}


def do_releases(ctx: Context) -> int:
    """`releases`."""
    doc = read_run(ctx, "releases.yml", {})
    results = ansible.task_results(doc, "Releases | Read the releases")
    text: list[str] = []
    for host, result in sorted(results.items()):
        text.append(f"{host}:")
        text += [f"  {line}" for line in result.get("lines") or ["(no release)"]]
    live = {
        h: next((r["id"] for r in res.get("releases") or [] if r.get("live")), "")
        for h, res in results.items()
    }
    text.append(
        f"{len(results)} host(s); live: "
        + (", ".join(f"{h} {i or 'nothing'}" for h, i in sorted(live.items())) or "none")
    )
    ctx.emit(
        {
            "verb": "releases",
            "ok": True,
            "hosts": {h: r.get("releases") or [] for h, r in results.items()},
            "live": live,
        },
        text,
    )
    return EXIT_OK


def do_ps(ctx: Context) -> int:
    """`ps`."""
    doc = read_run(ctx, "ps.yml", {})
    results = ansible.task_results(doc, "Ps | Read what")
    keys = ("release", "commit", "live_color", "health", "web", "processes", "timers")
    hosts = {h: {k: r.get(k) for k in keys} for h, r in results.items()}
    text: list[str] = []
    for host, result in sorted(results.items()):
        text.append(f"{host}:")
        text += [f"  {line}" for line in result.get("lines") or []]
    down = [
        h
        for h, r in hosts.items()
        # A worker-only host has no web tier (no colors): its processes only.
        if (r["web"] and r["health"] != "200")
        or any(not str(p.get("state", "")).startswith("active") for p in r["processes"] or [])
    ]
    text.append(
        f"{len(hosts)} host(s)"
        + (f"; not healthy or a process down on: {', '.join(sorted(down))}" if down else ", all up")
    )
    ctx.emit({"verb": "ps", "ok": True, "hosts": hosts, "down": sorted(down)}, text)
    return EXIT_OK


def do_lock(ctx: Context) -> int:
    """`lock [--break]`."""
    extra = {"release_break_lock": True} if ctx.args.break_lock else {}
    doc = read_run(ctx, "lock.yml", extra)
    found = ansible.task_results(doc, "Lock | Read the deploy lock")
    broken = ansible.task_results(doc, "Lock | Break it")
    hosts: dict[str, dict[str, Any]] = {}
    text: list[str] = []
    for host, result in sorted(found.items()):
        holder = result.get("holder") or {}
        was_broken = bool((broken.get(host) or {}).get("released"))
        hosts[host] = {
            "held": bool(result.get("held")) and not was_broken,
            "holder": holder,
            "stale": bool(result.get("stale")),
            "stale_reason": result.get("stale_reason", ""),
            "broken": was_broken,
        }
        if result.get("held"):
            line = (
                f"{host}: held by {holder.get('who', '?')} since {holder.get('since', '?')}"
                f" ({holder.get('action', '')} {holder.get('run', '')})".rstrip()
            )
            if result.get("stale"):
                line += f", stale: {result.get('stale_reason')}"
            if was_broken:
                line += "; broken now"
        else:
            line = f"{host}: free"
        text.append(line)
    held = [h for h, v in hosts.items() if v["held"]]
    text.append(
        f"{len(hosts)} host(s), locked on {len(held)}" + (f": {', '.join(held)}" if held else "")
    )
    ctx.emit({"verb": "lock", "ok": True, "hosts": hosts}, text)
    return EXIT_OK


def do_maintenance(ctx: Context) -> int:
    """`maintenance on|off`: the flag on the hosts where TLS terminates (balancers, else web)."""
    on = ctx.args.state == "on"
    doc = read_run(ctx, "maintenance.yml", {"djdeploy_maintenance": on})
    task = "Maintenance | Write the flag" if on else "Maintenance | Remove the flag"
    results = ansible.task_results(doc, task)
    if not results:
        raise CliError(
            "maintenance: the inventory has no host in the lb or web group",
            "check -i/--inventory",
            EXIT_INVENTORY,
        )
    text = [
        f"{host}: maintenance {ctx.args.state}"
        + (" (was already)" if not result.get("changed") else "")
        for host, result in sorted(results.items())
    ]
    text.append(
        f"{len(results)} host(s): "
        + (
            "nginx answers 503 with the maintenance page (loopback, app_admin_networks and the"
            " health check still get through)"
            if on
            else "the app answers again"
        )
    )
    ctx.emit(
        {
            "verb": "maintenance",
            "ok": True,
            "state": ctx.args.state,
            "hosts": {h: {"changed": bool(r.get("changed"))} for h, r in results.items()},
        },
        text,
    )
    return EXIT_OK


def do_backup(ctx: Context) -> int:
    """`backup`."""
    doc = read_run(ctx, "backup.yml", {})
    shown = ansible.task_results(doc, "Backup | Show where it is")
    files = {h: str(r.get("msg", "")).split(": ", 1)[-1] for h, r in shown.items()}
    ctx.emit(
        {"verb": "backup", "ok": True, "files": files},
        [f"{h}: {f}" for h, f in sorted(files.items())] + [f"backup: {len(files)} dump(s) written"],
    )
    return EXIT_OK


def do_restore(ctx: Context) -> int:
    """`restore [BACKUP] --confirm DATABASE`."""
    extra = {"restore_confirm": ctx.args.confirm}
    if ctx.args.backup:
        extra["restore_backup"] = ctx.args.backup
    run_playbook(ctx, "restore.yml", extra)
    ctx.emit(
        {"verb": "restore", "ok": True, "backup": ctx.args.backup or "newest pre-migrate"},
        [
            "",
            f"djdeploy restore: {ctx.args.confirm} restored from "
            f"{ctx.args.backup or 'the newest pre-migrate dump'}",
        ],
    )
    return EXIT_OK


# --- Config ------------------------------------------------------------------------------


def vault_of(ctx: Context) -> vault.Vault:
    """The inventory's vault, read and written with ansible-vault."""
    return vault.Vault(
        ctx.inventory_path, lambda argv, stdin: ctx.executor.capture(argv, ctx.env, stdin)
    )


def do_config(ctx: Context) -> int:
    """`config`."""
    config = vault_of(ctx).config()
    ctx.emit(
        {"verb": "config", "ok": True, "config": config},
        [f"{k}={v}" for k, v in sorted(config.items())] or ["(no settings in app_config)"],
    )
    return EXIT_OK


def live_commit(ctx: Context) -> str:
    """The commit live on every web host (they must agree)."""
    commits = {
        host: next(
            (str((r.get("record") or {}).get("commit", "")) for r in rels if r.get("live")), ""
        )
        for host, rels in releases_by_host(ctx).items()
    }
    values = set(commits.values())
    if not commits or "" in values:
        raise CliError(
            "no live release to apply the settings to on "
            + ", ".join(h for h, c in commits.items() if not c),
            "release first (djdeploy release), or edit only the vault with --no-apply",
        )
    if len(values) > 1:
        raise CliError(
            f"the web hosts run different commits ({commits}); a release or rollback is half done",
            "finish it (djdeploy release or rollback), then set the config again",
        )
    return values.pop()


def change_config(ctx: Context, change: Callable[[dict[str, str]], dict[str, str]]) -> int:
    """Edit app_config in the vault (kept encrypted), then apply it with a release of the live
    commit: the env file changes, so each host switches colors on the same release."""
    store = vault_of(ctx)
    before = store.config()
    after = change(dict(before))
    commit = "" if ctx.args.no_apply or after == before else live_commit(ctx)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if after != before:
        store.write_config(after)
    data: dict[str, Any] = {"verb": ctx.args.verb, "ok": True, "changed": changed}
    text = [f"{store.path}: {', '.join(changed) if changed else 'nothing'} changed"]
    if commit:
        report = run_playbook(ctx, "release.yml", {"app_ref": commit}, report=True)
        data["report"] = report
        text += ["", f"djdeploy {ctx.args.verb}: applied", *report.get("summary", [])]
    elif changed:
        text.append(
            "not applied (--no-apply): djdeploy restart does not re-read the vault; "
            "apply with djdeploy release"
        )
    ctx.emit(data, text)
    return EXIT_OK


def do_config_set(ctx: Context) -> int:
    """`config:set KEY=VALUE...`."""
    assignments: dict[str, str] = ctx.args.assignments
    return change_config(ctx, lambda config: {**config, **assignments})


def do_config_unset(ctx: Context) -> int:
    """`config:unset KEY...`."""
    keys = set(ctx.args.keys)
    return change_config(ctx, lambda config: {k: v for k, v in config.items() if k not in keys})


# --- Scale -------------------------------------------------------------------------------

PROCESS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,30}")
SCALE_FILE = "scale.yml"


def parse_counts(items: Sequence[str]) -> dict[str, int]:
    """PROCESS=N arguments (EXIT_USAGE on a malformed one)."""
    counts: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not PROCESS_NAME.fullmatch(name) or not value.isdigit():
            raise CliError(
                f"{item!r} is not PROCESS=N",
                "e.g. djdeploy scale worker=3 (a process of app_processes, N >= 0)",
                EXIT_USAGE,
            )
        if name == "web":
            raise CliError(
                "web is scaled with gunicorn_workers (the gunicorn role), not scale",
                "scale a process of app_processes",
                EXIT_USAGE,
            )
        counts[name] = int(value)
    return counts


def scale_path(inventory_path: str) -> Path:
    """The inventory's scale file (after main.yml in group_vars/all/, so it wins)."""
    return vault.vault_path(inventory_path).with_name(SCALE_FILE)


def do_scale(ctx: Context) -> int:
    """`scale PROCESS=N...`: app_scale in the inventory, then a release of the live commit
    (each host starts or stops instances; nothing is built, web does not switch)."""
    counts: dict[str, int] = ctx.args.counts
    name = ctx.groups().web_host(None)
    host = ctx.hosts([name])[name]
    for process, count in counts.items():
        if process not in host.processes:
            raise CliError(
                f"scale: {process!r} is not a process of the app",
                f"pick one of app_processes: {', '.join(host.processes) or '(none defined)'}",
                EXIT_USAGE,
            )
        if process in host.singletons and count > 1:
            raise CliError(
                f"scale: {process} is a singleton (one instance across all hosts)",
                f"scale it to 0 or 1 (got {count})",
                EXIT_USAGE,
            )
    path = scale_path(ctx.inventory_path)
    try:
        current = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(
            f"cannot read {path}: {exc}", "fix or remove the file", EXIT_INVENTORY
        ) from exc
    if not isinstance(current, dict) or not isinstance(current.get("app_scale", {}), dict):
        raise CliError(f"{path} has no app_scale mapping", "fix or remove the file", EXIT_INVENTORY)
    before = dict(current.get("app_scale") or {})
    after = {**before, **counts}
    changed = sorted(p for p in after if before.get(p) != after[p])
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump({"app_scale": dict(sorted(after.items()))}, sort_keys=True)
        tmp = path.with_name(f".{path.name}.djdeploy-{os.getpid()}")
        tmp.write_text(
            "---\n# Written by `djdeploy scale`: instances per host of app_processes (they win\n"
            "# over app_processes' instances; 0 stops a process).\n" + body
        )
        tmp.replace(path)
    data: dict[str, Any] = {"verb": "scale", "ok": True, "scale": after, "changed": changed}
    text = [
        f"{path}: "
        + (
            ", ".join(f"{p}={after[p]} (was {before.get(p, 'default')})" for p in changed)
            or "nothing"
        )
        + " changed"
    ]
    if changed and not ctx.args.no_apply:
        report = run_playbook(ctx, "release.yml", {"app_ref": live_commit(ctx)}, report=True)
        data["report"] = report
        text += ["", "djdeploy scale: applied", *report.get("summary", [])]
    elif changed:
        text.append("not applied (--no-apply): apply with djdeploy release")
    ctx.emit(data, text)
    return EXIT_OK


# --- Remote commands ---------------------------------------------------------------------


def do_run(ctx: Context) -> int:
    """`run [--host H] [-i] -- COMMAND...`: the command's exit code."""
    name = ctx.groups().web_host(ctx.args.host)
    host = ctx.hosts([name])[name]
    cmd = host.ssh(host.manage(ctx.args.command), tty=ctx.args.interactive)
    if ctx.args.interactive:
        rc = ctx.executor.attach(cmd, ctx.env)
    elif ctx.json:
        rc, out, err = ctx.executor.capture(cmd, ctx.env)
        ctx.emit(
            {
                "verb": "run",
                "host": name,
                "command": ctx.args.command,
                "exit_code": rc,
                "stdout": out,
                "stderr": err,
            },
            [],
        )
    else:
        rc = ctx.executor.attach(cmd, ctx.env)
    if rc == EXIT_SSH:
        ctx.err.write(
            f"djdeploy: ssh to {name} ({host.user}@{host.address}) failed (exit 255)\n"
            "fix: check that the deploy user logs in with the inventory's key "
            f"(ansible {name} -i {ctx.inventory_path} -m ansible.builtin.ping)\n"
        )
    return rc


def journal_units(host: inventory.Host, process: str | None) -> list[str]:
    """journalctl -u arguments: the web units (both colors, sockets too), a process's
    instances, a schedule's runs; all of them without ``process``."""
    web = ["-u", f"{host.app}@*"]
    procs = {p: ["-u", f"{host.app}-{p}@*"] for p in host.processes}
    scheds = {s: ["-u", f"{host.app}-{s}.service"] for s in host.schedules}
    if process is None:
        return web + [a for args in (*procs.values(), *scheds.values()) for a in args]
    if process == "web":
        return web
    if process in procs:
        return procs[process]
    if process in scheds:
        return scheds[process]
    known = ["web", *host.processes, *host.schedules]
    raise CliError(
        f"logs: {process!r} is not a process of the app on {host.name}",
        f"pick one of: {', '.join(known)} (app_processes, app_schedules)",
        EXIT_USAGE,
    )


def journal_command(host: inventory.Host, args: argparse.Namespace) -> list[str]:
    """The remote journalctl of the app's units (-p: one process's)."""
    units = journal_units(host, getattr(args, "process", None))
    remote = ["sudo", "-n", "journalctl", "--no-pager", "-o", "short-iso", *units]
    # journalctl's -n with --since counts from the start of the window: with --since, the
    # whole window comes and the last --lines are kept here (merge_lines' caller).
    if args.since:
        remote += ["--since", args.since]
    else:
        remote += ["-n", str(args.lines or DEFAULT_LINES)]
    if args.follow:
        remote.append("-f")
    return host.ssh(remote)


def merge_lines(lines: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(host, line) pairs of every host's journal, in time order (short-iso lines start with
    their timestamp; lines of one host keep their order)."""
    tagged = [
        (line.split(" ", 1)[0], i, host, line)
        for host, ls in lines.items()
        for i, line in enumerate(ls)
    ]
    tagged.sort(key=lambda t: (t[0], t[2], t[1]))
    return [(host, line) for _, _, host, line in tagged]


def do_logs(ctx: Context) -> int:
    """`logs [-f] [--since S] [-n N] [--host H]`: the web hosts and the worker-only hosts."""
    inv = ctx.groups()
    names = [inv.app_host(ctx.args.host)] if ctx.args.host else [*inv.web, *inv.workers]
    if not names:
        inv.web_host(None)
    hosts = ctx.hosts(names)
    commands = {name: journal_command(hosts[name], ctx.args) for name in names}
    procs = {name: ctx.executor.spawn(commands[name], ctx.env) for name in names}
    width = max(len(n) for n in names)

    def show(host: str, line: str) -> None:
        if ctx.json:
            ctx.out.write(json.dumps({"host": host, "line": line}) + "\n")
        else:
            ctx.out.write(f"{host.ljust(width)} | {line}\n")
        ctx.out.flush()

    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(host: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((host, line.rstrip("\n")))
        lines.put((host, None))

    threads = [threading.Thread(target=pump, args=(h, p), daemon=True) for h, p in procs.items()]
    for thread in threads:
        thread.start()
    collected: dict[str, list[str]] = {h: [] for h in names}
    open_hosts = set(names)
    try:
        while open_hosts:
            host, line = lines.get()
            if line is None:
                open_hosts.discard(host)
            elif ctx.args.follow:
                show(host, line)
            elif not line.startswith("-- "):  # journalctl's "-- No entries --" notes
                collected[host].append(line)
    except KeyboardInterrupt:
        for proc in procs.values():
            proc.terminate()
    if ctx.args.since and ctx.args.lines:
        collected = {h: ls[-ctx.args.lines :] for h, ls in collected.items()}
    for host, line in merge_lines(collected):
        show(host, line)
    failed = {}
    for host, proc in procs.items():
        rc = proc.wait()
        if rc != 0:
            failed[host] = (rc, (proc.stderr.read() if proc.stderr else "").strip())
    if failed and not ctx.args.follow:
        detail = "; ".join(f"{h}: exit {rc} {e}" for h, (rc, e) in failed.items())
        raise CliError(
            f"logs: journalctl failed on {detail}",
            "check SSH as the deploy user and that it may sudo journalctl; --since takes "
            "journalctl's formats ('1 hour ago', '2026-12-02 10:00')",
            EXIT_SSH if all(rc == EXIT_SSH for rc, _ in failed.values()) else EXIT_FAILED,
        )
    if not ctx.json:
        ctx.err.write(
            f"logs: {sum(len(v) for v in collected.values())} line(s) from {len(names)} host(s)\n"
        )
    return EXIT_OK


HANDLERS: dict[str, Callable[[Context], int]] = {
    "release": do_release,
    "rollback": do_rollback,
    "releases": do_releases,
    "restart": do_restart,
    "run": do_run,
    "logs": do_logs,
    "config": do_config,
    "config:set": do_config_set,
    "config:unset": do_config_unset,
    "ps": do_ps,
    "scale": do_scale,
    "lock": do_lock,
    "maintenance": do_maintenance,
    "backup": do_backup,
    "restore": do_restore,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    executor: Executor | None = None,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Parse, check, run one verb; return the exit code (see EXIT_CODES)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        args.inventory = resolve_inventory(args.inventory)
        ctx = Context(
            args=args,
            executor=executor or SubprocessExecutor(),
            env=ansible.environment(
                env if env is not None else os.environ, args.vault_password_file
            ),
            out=out,
            err=err,
        )
        return HANDLERS[args.verb](ctx)
    except CliError as exc:
        err.write(f"djdeploy: {exc.cause}\nfix: {exc.fix}\n")
        if args.json:
            out.write(
                json.dumps(
                    {
                        "verb": args.verb,
                        "ok": False,
                        "exit_code": exc.code,
                        "error": exc.cause,
                        "fix": exc.fix,
                    },
                    indent=2,
                )
                + "\n"
            )
        return exc.code
    except KeyboardInterrupt:
        err.write("djdeploy: interrupted\n")
        return 130
