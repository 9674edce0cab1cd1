"""Hosts and connection settings of an inventory, read through Ansible's own commands.

``ansible-inventory --list`` gives the groups and their hosts. The connection settings of a
host (address, port, user, key, SSH arguments) and the app's names are templated by Ansible
(an inventory may compute them, e.g. from ``inventory_dir`` or an environment lookup), so they
come from one ad-hoc ``debug`` call, which runs on the controller and connects to nothing.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from djdeploy.ansible import parse_json_run
from djdeploy.errors import EXIT_INVENTORY, CliError

# Runs a command and returns (exit code, stdout, stderr); tests inject a fake.
Runner = Callable[[Sequence[str]], tuple[int, str, str]]

# What the ad-hoc call templates for each host (a Jinja expression rendered to a dict).
HOST_FACTS = (
    "{{ {"
    "'address': ansible_host | default(inventory_hostname), "
    "'port': ansible_port | default(''), "
    "'user': ansible_user | default(''), "
    "'key': ansible_ssh_private_key_file | default(''), "
    "'common_args': ansible_ssh_common_args | default(''), "
    "'extra_args': ansible_ssh_extra_args | default(''), "
    "'app': app_name, "
    "'runtime_user': release_runtime_user | default(app_name), "
    "'deploy_user': app_deploy_user | default('deploy'), "
    "'processes': (app_processes | default({}) or {}) | list, "
    "'singletons': (app_processes | default({}) or {}) | dict2items"
    " | selectattr('value.singleton', 'defined') | selectattr('value.singleton')"
    " | map(attribute='key') | list, "
    "'scale': app_scale | default({}) or {}, "
    "'schedules': (app_schedules | default({}) or {}) | list"
    "} | to_json }}"
)


@dataclass(frozen=True)
class Inventory:
    """The groups of an inventory that the CLI uses."""

    path: str
    web: tuple[str, ...]
    db: tuple[str, ...]
    # Worker-only hosts: hosts of the groups app_processes names (`group`) outside web; they run
    # the app's processes only (logs reach them too).
    workers: tuple[str, ...] = ()

    def web_host(self, wanted: str | None) -> str:
        """The web host to act on: ``wanted`` when given (it must be a web host), else the first."""
        if not self.web:
            raise CliError(
                f"the inventory {self.path} has no host in the 'web' group",
                "add your app hosts to the 'web' group of its hosts.yml",
                EXIT_INVENTORY,
            )
        if wanted is None:
            return self.web[0]
        if wanted not in self.web:
            raise CliError(
                f"{wanted!r} is not a web host of the inventory {self.path}",
                f"pick one of: {', '.join(self.web)}",
                EXIT_INVENTORY,
            )
        return wanted

    def app_host(self, wanted: str) -> str:
        """``wanted`` when it runs the app: a web host or a worker-only host."""
        if wanted in self.workers:
            return wanted
        if wanted not in self.web:
            raise CliError(
                f"{wanted!r} is not an app host of the inventory {self.path}",
                f"pick one of: {', '.join((*self.web, *self.workers))}",
                EXIT_INVENTORY,
            )
        return wanted


def _process_groups(data: dict[str, Any]) -> list[str]:
    """The groups app_processes names (`group`), from the listing's host variables (the first
    host that has app_processes as a mapping; group_vars/all gives every host the same)."""
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    for variables in hostvars.values():
        processes = (variables or {}).get("app_processes")
        if isinstance(processes, dict):
            groups = [e.get("group", "web") for e in processes.values() if isinstance(e, dict)]
            return [g for g in dict.fromkeys(groups) if isinstance(g, str) and g]
    return []


@dataclass(frozen=True)
class Host:
    """How to reach one host over SSH as the deploy user, and the app's names there."""

    name: str
    address: str
    port: str
    user: str
    key: str
    ssh_args: tuple[str, ...]
    app: str
    runtime_user: str
    # The names of the app's processes besides web and of its schedules (app_processes,
    # app_schedules): their units are <app>-<name>@<n>.service and <app>-<name>.service.
    processes: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()
    singletons: tuple[str, ...] = ()

    def ssh(self, remote: Sequence[str], *, tty: bool = False) -> list[str]:
        """The ssh command line that runs ``remote`` (argv, quoted for the remote shell)."""
        cmd = ["ssh", "-t" if tty else "-T", "-o", "BatchMode=yes"]
        if self.port:
            cmd += ["-p", self.port]
        if self.key:
            cmd += ["-i", self.key]
        cmd += list(self.ssh_args)
        target = f"{self.user}@{self.address}" if self.user else self.address
        cmd += [target, "--", shlex.join(remote)]
        return cmd

    def manage(self, args: Sequence[str]) -> list[str]:
        """The remote argv that runs manage.py of the live release as the runtime user."""
        return ["sudo", "-n", "-u", self.runtime_user, f"/usr/local/bin/{self.app}-manage", *args]


def parse_groups(path: str, listing: str) -> Inventory:
    """The web and db hosts from ``ansible-inventory --list`` output."""
    try:
        data = json.loads(listing)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"ansible-inventory gave no JSON for {path}: {exc}",
            "run `ansible-inventory -i <inventory> --list` to see what it says",
            EXIT_INVENTORY,
        ) from exc

    def hosts(group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        entry = data.get(group) or {}
        found = list(entry.get("hosts") or [])
        for child in entry.get("children") or []:
            if child not in seen:
                found += [h for h in hosts(child, seen | {group}) if h not in found]
        return found

    web = hosts("web")
    workers: list[str] = []
    for group in _process_groups(data):
        workers += [h for h in hosts(group) if h not in web and h not in workers]
    return Inventory(path=path, web=tuple(web), db=tuple(hosts("db")), workers=tuple(workers))


def load(path: str, run: Runner) -> Inventory:
    """Read the inventory's groups with ``ansible-inventory``."""
    rc, out, err = run(["ansible-inventory", "-i", path, "--list"])
    if rc != 0:
        raise CliError(
            f"cannot read the inventory {path}: {err.strip() or out.strip()}",
            "check the path (-i/--inventory) and, for an encrypted vault, the vault password "
            "(--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)",
            EXIT_INVENTORY,
        )
    return parse_groups(path, out)


def parse_host_facts(hosts: Sequence[str], output: str) -> dict[str, Host]:
    """The hosts from the JSON callback's output of the ad-hoc ``debug`` call."""
    try:
        doc = parse_json_run(output)
        results = doc["plays"][0]["tasks"][0]["hosts"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CliError(
            f"cannot read the hosts' connection settings: {exc}",
            "run the command again with ANSIBLE_DEBUG=1 to see what Ansible printed",
            EXIT_INVENTORY,
        ) from exc
    found: dict[str, Host] = {}
    for name in hosts:
        result = results.get(name) or {}
        msg = result.get("msg")
        facts: object = None
        if not result.get("failed"):
            try:
                facts = json.loads(msg) if isinstance(msg, str) else msg
            except json.JSONDecodeError:
                facts = None
        if not isinstance(facts, dict):
            raise CliError(
                f"cannot template the settings of {name}: {result.get('msg', 'no result')}",
                "the inventory must define app_name (group_vars/all/main.yml)",
                EXIT_INVENTORY,
            )
        args: list[str] = []
        for extra in (facts.get("common_args") or "", facts.get("extra_args") or ""):
            args += shlex.split(str(extra))
        found[name] = Host(
            name=name,
            address=str(facts["address"]),
            port=str(facts.get("port") or ""),
            user=str(facts.get("user") or facts.get("deploy_user") or ""),
            key=str(Path(str(facts["key"])).expanduser()) if facts.get("key") else "",
            ssh_args=tuple(args),
            app=str(facts["app"]),
            runtime_user=str(facts["runtime_user"]),
            processes=tuple(str(n) for n in facts.get("processes") or []),
            schedules=tuple(str(n) for n in facts.get("schedules") or []),
            singletons=tuple(str(n) for n in facts.get("singletons") or []),
        )
    return found


def host_facts_command(path: str, hosts: Sequence[str]) -> list[str]:
    """The ad-hoc call that templates the hosts' settings (run with the JSON callback)."""
    return [
        "ansible",
        ",".join(hosts),
        "-i",
        path,
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={HOST_FACTS}",
    ]


def connect(path: str, hosts: Sequence[str], run: Runner) -> dict[str, Host]:
    """Connection settings of the hosts (no connection is made)."""
    rc, out, err = run(host_facts_command(path, hosts))
    if rc != 0 and not out.strip().startswith("{"):
        raise CliError(
            f"cannot read the settings of {', '.join(hosts)}: {err.strip() or out.strip()}",
            "check the inventory (-i/--inventory) and the vault password",
            EXIT_INVENTORY,
        )
    return parse_host_facts(hosts, out)
