"""The app's processes besides web (app_processes) and its schedules (app_schedules), per host.

The inventory describes them once for every host; these filters check them (a bad entry fails
with a message naming the variable, before anything changes: playbooks/preflight.yml templates
them) and say what one host runs: each process with its number of instances there (0: stop it
there) and each schedule with whether its timer lives there. The release switch
(roles/release/library/djdeploy_switch.py) writes and starts the units from that.

- A process runs `instances` times on each host of its `group` (default web); a `singleton`
  runs once, on the first host of its group in inventory order, so exactly one instance exists
  across all hosts. A group may hold hosts outside web (say a `worker` group): those hosts run
  processes only (no gunicorn, no nginx vhost of the app) and are released with the web tier.
- The app hosts (``djdeploy_app_hosts``): the web hosts first, then the hosts of the processes'
  groups that are not web hosts (worker-only hosts), in inventory order; the app-level playbooks
  build, switch and roll back these (playbooks/app_hosts.yml makes them the group djdeploy_app).
- The switch batches (``djdeploy_batches``): release_serial web hosts per batch (the first is the
  canary), then the worker-only hosts, never in a batch with a web host: they switch once every
  web host serves the release.
- A schedule runs on one host: the first web host.
- app_scale (`djdeploy scale worker=3`, written to the inventory's group_vars/all/scale.yml)
  overrides a process's instances per host: 0 stops it everywhere, a singleton takes 0 or 1.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
PROCESS_KEYS = {"command", "instances", "group", "stop_timeout", "singleton"}
SCHEDULE_KEYS = {"command", "on_calendar", "randomized_delay"}
# The web tier's group; a process's group defaults to it.
WEB = "web"
SCALE = "app_scale"


def _fail(variable: str, message: str) -> ValueError:
    return ValueError(f"{variable}: {message}")


def _int(variable: str, value: Any, name: str, key: str, default: int, low: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(variable, f"{name}.{key} must be a whole number >= {low} (got {value!r})")
    return value


def _command(variable: str, entry: dict[str, Any], name: str) -> str:
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise _fail(variable, f"{name}.command must be a non-empty string (got {command!r})")
    if "\n" in command or "\r" in command:
        raise _fail(variable, f"{name}.command must be one line")
    return command


def _entries(variable: str, value: Any, keys: set[str]) -> list[tuple[str, dict[str, Any]]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _fail(
            variable, f"must be a mapping of names to settings (got {type(value).__name__})"
        )
    entries = []
    for name in sorted(value):
        entry = value[name]
        if not isinstance(name, str) or not NAME.match(name):
            raise _fail(variable, f"the name {name!r} must match {NAME.pattern}")
        if not isinstance(entry, dict):
            raise _fail(variable, f"{name} must be a mapping (got {type(entry).__name__})")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise _fail(
                variable,
                f"{name} has unknown key(s) {', '.join(map(str, unknown))}"
                f" (known: {', '.join(sorted(keys))})",
            )
        entries.append((name, entry))
    return entries


def _scale(value: Any, names: dict[str, bool]) -> dict[str, int]:
    """app_scale checked against the processes (names: process -> singleton)."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        raise _fail(SCALE, f"must be a mapping of process names to instances (got {value!r})")
    for name, count in value.items():
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise _fail(SCALE, f"{name!r} is not a process of app_processes (known: {known})")
        _int(SCALE, count, name, "instances", 0, 0)
        if names[name] and count > 1:
            raise _fail(
                SCALE,
                f"{name} is a singleton (exactly one instance across all hosts):"
                f" it scales to 0 or 1 (got {count})",
            )
    return dict(value)


def djdeploy_host_processes(
    app_processes: Any,
    groups: dict[str, list[str]],
    host: str,
    variable: str = "app_processes",
    scale: Any = None,
) -> list[dict[str, Any]]:
    """The processes `host` runs: name, command, instances (0: none here), stop_timeout,
    group, singleton; `scale` (app_scale) overrides instances. Raises ValueError naming the
    variable on bad input."""
    result = []
    entries = _entries(variable, app_processes, PROCESS_KEYS)
    scaled = _scale(scale, {name: entry.get("singleton") is True for name, entry in entries})
    for name, entry in entries:
        if name == "web":
            raise _fail(variable, "the name web is the web process itself (gunicorn); pick another")
        command = _command(variable, entry, name)
        singleton = entry.get("singleton", False)
        if not isinstance(singleton, bool):
            raise _fail(variable, f"{name}.singleton must be true or false (got {singleton!r})")
        instances = _int(variable, entry.get("instances"), name, "instances", 1, 1)
        if singleton and instances != 1:
            raise _fail(
                variable,
                f"{name} is a singleton (exactly one instance across all hosts):"
                f" instances must be 1 (got {instances})",
            )
        stop_timeout = _int(variable, entry.get("stop_timeout"), name, "stop_timeout", 30, 1)
        group = entry.get("group", WEB)
        if not isinstance(group, str) or not group:
            raise _fail(variable, f"{name}.group must be an inventory group name (got {group!r})")
        hosts = list(groups.get(group) or [])
        if not hosts:
            raise _fail(variable, f"{name}.group {group!r} has no hosts in the inventory")
        instances = scaled.get(name, instances)
        # A singleton runs on the group's first host only.
        here = (instances if host == hosts[0] else 0) if singleton else instances
        here = here if host in hosts else 0
        result.append(
            {
                "name": name,
                "command": command,
                "instances": here,
                "stop_timeout": stop_timeout,
                "group": group,
                "singleton": singleton,
            }
        )
    return result


def djdeploy_host_schedules(
    app_schedules: Any,
    groups: dict[str, list[str]],
    host: str,
    variable: str = "app_schedules",
) -> list[dict[str, Any]]:
    """The schedules: name, command, on_calendar, randomized_delay (seconds) and here (the
    timer lives on this host: the first web host). on_calendar is checked on the host
    (systemd-analyze calendar, playbooks/preflight.yml); here only its shape."""
    web = list(groups.get(WEB) or [])
    result = []
    for name, entry in _entries(variable, app_schedules, SCHEDULE_KEYS):
        command = _command(variable, entry, name)
        calendar = entry.get("on_calendar")
        if not isinstance(calendar, str) or not calendar.strip() or "\n" in calendar:
            raise _fail(
                variable,
                f"{name}.on_calendar must be a systemd calendar expression (got {calendar!r})",
            )
        delay = _int(variable, entry.get("randomized_delay"), name, "randomized_delay", 0, 0)
        result.append(
            {
                "name": name,
                "command": command,
                "on_calendar": calendar.strip(),
                "randomized_delay": delay,
                "here": bool(web) and host == web[0],
            }
        )
    return result


def djdeploy_app_hosts(
    app_processes: Any, groups: dict[str, list[str]], variable: str = "app_processes"
) -> list[str]:
    """The hosts the app is released to: the web hosts, then the hosts of the processes'
    groups that are not web hosts (worker-only hosts), each once, in inventory order. A group
    that is missing or empty is left to djdeploy_host_processes to refuse (naming the
    variable)."""
    found = list(dict.fromkeys(groups.get(WEB) or []))
    for _name, entry in _entries(variable, app_processes, PROCESS_KEYS):
        group = entry.get("group", WEB)
        if isinstance(group, str) and group:
            found += [h for h in groups.get(group) or [] if h not in found]
    return found


def djdeploy_batches(serial: Any, web_hosts: int, worker_hosts: int) -> Any:
    """The `serial` of the switch plays (a list of batch sizes): `serial` (release_serial)
    web hosts per batch, then the worker-only hosts `serial` at a time, never in a batch with a
    web host (a failed web host stops the run before any worker-only host switches). A serial
    that is not a whole number (a percentage) is returned as it is when there are no
    worker-only hosts."""
    try:
        size = int(serial)
    except (TypeError, ValueError):
        if worker_hosts:
            raise _fail(
                "release_serial",
                f"must be a whole number >= 1 with worker-only hosts (got {serial!r})",
            ) from None
        return serial
    if isinstance(serial, bool) or size < 1:
        raise _fail("release_serial", f"must be a whole number >= 1 (got {serial!r})")
    batches: list[int] = []
    for count in (web_hosts, worker_hosts):
        left = count
        while left > 0:
            batches.append(min(size, left))
            left -= size
    return batches or [size]


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "djdeploy_host_processes": djdeploy_host_processes,
            "djdeploy_host_schedules": djdeploy_host_schedules,
            "djdeploy_app_hosts": djdeploy_app_hosts,
            "djdeploy_batches": djdeploy_batches,
        }
