"""The app's processes besides web (app_processes) and its schedules (app_schedules), per host.

The inventory describes them once for every host; these filters check them (a bad entry fails
with a message naming the variable, before anything changes: playbooks/preflight.yml templates
them) and say what one host runs: each process with its number of instances there (0: stop it
there) and each schedule with whether its timer lives there. The release switch
(roles/release/library/djdeploy_switch.py) writes and starts the units from that.

- A process runs `instances` times on each host of its `group` (default web); a `singleton`
  runs once, on the first host of its group in inventory order, so exactly one instance exists
  across all hosts.
- A schedule runs on one host: the first web host.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
PROCESS_KEYS = {"command", "instances", "group", "stop_timeout", "singleton"}
SCHEDULE_KEYS = {"command", "on_calendar", "randomized_delay"}
# Processes run where the release switches: on the web hosts.
WEB = "web"


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


def djdeploy_host_processes(
    app_processes: Any,
    groups: dict[str, list[str]],
    host: str,
    variable: str = "app_processes",
) -> list[dict[str, Any]]:
    """The processes `host` runs: name, command, instances (0: none here), stop_timeout,
    group, singleton. Raises ValueError naming the variable on bad input."""
    web = list(groups.get(WEB) or [])
    result = []
    for name, entry in _entries(variable, app_processes, PROCESS_KEYS):
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
        outside = [h for h in hosts if h not in web]
        if outside:
            raise _fail(
                variable,
                f"{name}.group {group!r} has hosts outside the {WEB} group"
                f" ({', '.join(outside)}): processes run on web hosts (where releases are built)",
            )
        # A singleton runs on the group's first host only.
        here = (1 if host == hosts[0] else 0) if singleton else (instances if host in hosts else 0)
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


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "djdeploy_host_processes": djdeploy_host_processes,
            "djdeploy_host_schedules": djdeploy_host_schedules,
        }
