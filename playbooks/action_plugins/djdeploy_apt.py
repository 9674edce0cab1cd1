"""Action djdeploy_apt: ``ansible.builtin.apt`` for "these packages are present", which asks
dpkg first.

Every role installs its packages with apt (``state: present``, often with
``update_cache``/``cache_valid_time``). When they are all installed already, which is every
run after the first, apt still loads its whole package cache: 0.7-1.8 s a task on the test
hosts, six such tasks in a ``site.yml`` run, about a quarter of a run that changes nothing.
This action asks ``dpkg-query`` (a few milliseconds) and returns "unchanged" when each named
package is installed; otherwise, or for any argument it does not know, it runs
``ansible.builtin.apt`` with the task's arguments, unchanged.

The package lists are not refreshed when nothing is installed: ``update_cache`` only serves
the install (the base role refreshes stale lists on its own task). That task (``update_cache``
with ``cache_valid_time`` and nothing else) is answered the same way: apt's own rule, the age
of ``/var/lib/apt/periodic/update-success-stamp`` (or of ``/var/lib/apt/lists``), read with
``stat``, and apt runs only when the lists are older than ``cache_valid_time``. When apt has
refreshed them for that task, the action touches the stamp itself (STAMP): the base role's apt
hook does it for every later ``apt-get update``, but a Python interpreter that already read
apt's configuration (Mitogen keeps one per host for the whole run, and the hardening role's
installs load apt first) does not see a hook installed during the same run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
---
module: djdeploy_apt
short_description: Install Debian packages with apt, unless dpkg says they are all installed
description:
  - Takes the arguments of M(ansible.builtin.apt). When they only ask for named packages to be
    present (I(name), I(state=present), I(update_cache), I(cache_valid_time),
    I(install_recommends)) and C(dpkg-query) reports each of them installed, the task is
    unchanged and apt does not run. In every other case M(ansible.builtin.apt) runs with the
    same arguments.
  - A package named with a version, a wildcard, a C(.deb) path or a virtual package is left to
    apt.
  - A task that only refreshes the lists (I(update_cache) with I(cache_valid_time)) is
    unchanged while they are younger than I(cache_valid_time) (apt's own rule: the age of
    C(/var/lib/apt/periodic/update-success-stamp), or of C(/var/lib/apt/lists)).
options: {}
author: djdeploy maintainers
"""

EXAMPLES = r"""
- name: Install nginx and logrotate
  djdeploy_apt:
    name: [nginx, logrotate]
    state: present
    update_cache: true
    cache_valid_time: 3600
"""

#: The apt arguments the dpkg check understands; any other argument goes to apt as is.
CHECKED_ARGUMENTS = frozenset(
    {"name", "pkg", "package", "state", "update_cache", "cache_valid_time", "install_recommends"}
)
#: A plain package name, with an optional architecture (Debian policy 5.6.1).
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
#: dpkg-query's format: the name, then the abbreviated status (desired, current, error).
DPKG_FORMAT = "${Package}\t${db:Status-Abbrev}\n"


#: The seconds since the epoch on the host, then the time of the lists' last refresh as apt
#: judges it (its success stamp, else the lists directory, else never).
LISTS_AGE = (
    "date +%s; stat -c %Y /var/lib/apt/periodic/update-success-stamp 2>/dev/null"
    " || stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0"
)


#: Marks a successful refresh of the lists (the first file apt's rule reads; LISTS_AGE).
STAMP = "touch /var/lib/apt/periodic/update-success-stamp"


def refresh_only_valid_time(args: dict[str, Any]) -> int | None:
    """cache_valid_time of a task that only refreshes the lists when they are older, or None
    for any other task."""
    if set(args) != {"update_cache", "cache_valid_time"} or not args["update_cache"]:
        return None
    try:
        valid = int(args["cache_valid_time"])
    except (TypeError, ValueError):
        return None
    return valid if valid > 0 else None


def lists_are_fresh(lists_age_output: str, valid_time: int) -> bool:
    """Whether LISTS_AGE's output says the lists were refreshed less than valid_time seconds
    ago (apt's rule); False when the output cannot be read."""
    try:
        now, refreshed = (int(value) for value in lists_age_output.split())
    except ValueError:
        return False
    return refreshed > 0 and now - refreshed < valid_time


def checked_names(args: dict[str, Any]) -> list[str] | None:
    """The package names to ask dpkg about, or None when the task is not a plain "present"
    of named packages (apt decides then)."""
    if not set(args) <= CHECKED_ARGUMENTS or args.get("state", "present") != "present":
        return None
    names = args.get("name", args.get("pkg", args.get("package")))
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",")]
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(name, str) and PACKAGE_NAME.match(name) for name in names):
        return None
    return list(names)


def installed(dpkg_output: str) -> set[str]:
    """The names that dpkg-query's output (DPKG_FORMAT) shows installed: wanted installed or
    held ("i" or "h"), installed ("i"), no error."""
    found = set()
    for line in dpkg_output.splitlines():
        name, _, status = line.partition("\t")
        if len(status) >= 2 and status[0] in "ih" and status[1] == "i" and status[2:].strip() == "":
            found.add(name.strip())
    return found


def missing(names: Iterable[str], dpkg_output: str) -> list[str]:
    """The names (architecture qualifiers ignored) that dpkg does not show installed."""
    present = installed(dpkg_output)
    return [name for name in names if name.split(":", 1)[0] not in present]


class ActionModule(ActionBase):  # type: ignore[misc]
    """See the module docstring."""

    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = dict(self._task.args)
        valid_time = refresh_only_valid_time(args)
        if valid_time is not None:
            age = self._low_level_execute_command(LISTS_AGE)
            if age.get("rc") == 0 and lists_are_fresh(age.get("stdout", ""), valid_time):
                result.update(changed=False, cache_updated=False, msg="the package lists are fresh")
                return result
        names = checked_names(args)
        if names is not None:
            # dpkg-query exits 1 when a name is unknown: that name is simply not installed.
            query = self._low_level_execute_command(
                shlex.join(["dpkg-query", "-W", f"-f={DPKG_FORMAT}", *names])
            )
            if query.get("rc") in (0, 1) and not missing(names, query.get("stdout", "")):
                result.update(
                    changed=False,
                    cache_updated=False,
                    msg=f"installed already: {', '.join(names)}",
                )
                return result
        result.update(
            self._execute_module(
                module_name="ansible.builtin.apt", module_args=args, task_vars=task_vars
            )
        )
        if valid_time is not None and not result.get("failed") and not self._task.check_mode:
            # Stale by the same rule apt applies, so apt refreshed them: say so for next time.
            self._low_level_execute_command(STAMP)
        return result
