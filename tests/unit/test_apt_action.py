"""The djdeploy_apt action (playbooks/action_plugins/djdeploy_apt.py): which tasks dpkg answers,
how its output is read, and that apt runs whenever anything is missing or not understood."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from .loader import load

action = load("playbooks/action_plugins/djdeploy_apt.py")

DPKG = "nginx\tii \nlogrotate\tii \nvim\trc \nfoo\tiU \nheld\thi \n"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ({"name": ["nginx", "logrotate"]}, ["nginx", "logrotate"]),
        (
            {
                "name": ["python3-venv", "libpq5:amd64"],
                "state": "present",
                "update_cache": True,
                "cache_valid_time": 3600,
                "install_recommends": False,
            },
            ["python3-venv", "libpq5:amd64"],
        ),
        ({"pkg": "nginx, logrotate"}, ["nginx", "logrotate"]),
        ({"name": ["nginx"], "state": "latest"}, None),
        ({"name": ["nginx"], "state": "absent"}, None),
        ({"name": ["nginx=1.22.1-9"]}, None),
        ({"name": ["nginx*"]}, None),
        ({"deb": "/tmp/x.deb"}, None),
        ({"name": ["nginx"], "upgrade": "dist"}, None),
        ({"update_cache": True}, None),
        ({"name": []}, None),
    ],
)
def test_only_a_plain_present_of_named_packages_is_checked(
    args: dict[str, Any], names: list[str] | None
) -> None:
    assert action.checked_names(args) == names


def test_installed_means_wanted_or_held_and_installed_without_error() -> None:
    assert action.installed(DPKG) == {"nginx", "logrotate", "held"}
    assert action.missing(["nginx", "logrotate:amd64", "held"], DPKG) == []
    assert action.missing(["nginx", "vim", "foo", "unknown"], DPKG) == ["vim", "foo", "unknown"]


def run_action(
    args: dict[str, Any],
    dpkg: dict[str, Any],
    apt: dict[str, Any] | None = None,
    check_mode: bool = False,
) -> tuple[dict[str, Any], list[Any]]:
    """The action's run with dpkg's answer and apt (recorded) injected."""
    module = object.__new__(action.ActionModule)
    module._task = SimpleNamespace(args=args, async_val=0, check_mode=check_mode)
    calls: list[Any] = []

    def low_level(cmd: str) -> dict[str, Any]:
        calls.append(("dpkg", cmd))
        return dpkg

    def execute_module(module_name: str, module_args: dict[str, Any], task_vars: Any) -> Any:
        calls.append((module_name, module_args))
        return apt if apt is not None else {"changed": True, "cache_updated": True}

    module._low_level_execute_command = low_level
    module._execute_module = execute_module
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(action.ActionBase, "run", lambda self, tmp=None, task_vars=None: {})
        return module.run(task_vars={}), calls


def test_installed_packages_are_not_handed_to_apt() -> None:
    result, calls = run_action(
        {"name": ["nginx", "logrotate"], "update_cache": True}, {"rc": 0, "stdout": DPKG}
    )
    assert result == {
        "changed": False,
        "cache_updated": False,
        "msg": "installed already: nginx, logrotate",
    }
    assert calls == [
        ("dpkg", "dpkg-query -W '-f=${Package}\t${db:Status-Abbrev}\n' nginx logrotate")
    ]


@pytest.mark.parametrize(
    ("args", "dpkg"),
    [
        ({"name": ["nginx", "vim"]}, {"rc": 1, "stdout": DPKG}),  # one missing
        ({"name": ["nginx"]}, {"rc": 2, "stdout": DPKG}),  # dpkg-query itself failed
        ({"name": ["nginx"], "state": "latest"}, {"rc": 0, "stdout": DPKG}),  # not checked
    ],
)
def test_apt_runs_with_the_tasks_arguments_otherwise(
    args: dict[str, Any], dpkg: dict[str, Any]
) -> None:
    result, calls = run_action(args, dpkg)
    assert result == {"changed": True, "cache_updated": True}
    assert calls[-1] == ("ansible.builtin.apt", args)


@pytest.mark.parametrize(
    ("args", "valid"),
    [
        ({"update_cache": True, "cache_valid_time": 3600}, 3600),
        ({"update_cache": True, "cache_valid_time": "600"}, 600),
        ({"update_cache": True}, None),  # always refresh: apt
        ({"update_cache": False, "cache_valid_time": 3600}, None),
        ({"update_cache": True, "cache_valid_time": 0}, None),
        ({"update_cache": True, "cache_valid_time": 3600, "upgrade": "dist"}, None),
    ],
)
def test_only_a_refresh_when_stale_is_checked(args: dict[str, Any], valid: int | None) -> None:
    assert action.refresh_only_valid_time(args) == valid


def test_fresh_lists_are_younger_than_the_valid_time() -> None:
    assert action.lists_are_fresh("1000000\n999000\n", 3600)
    assert not action.lists_are_fresh("1000000\n990000\n", 3600)
    assert not action.lists_are_fresh("1000000\n0\n", 3600)  # never refreshed
    assert not action.lists_are_fresh("garbage", 3600)


@pytest.mark.parametrize(("refreshed", "apt_runs"), [("999000", False), ("990000", True)])
def test_a_refresh_when_stale_runs_apt_only_when_stale(refreshed: str, apt_runs: bool) -> None:
    args = {"update_cache": True, "cache_valid_time": 3600}
    result, calls = run_action(args, {"rc": 0, "stdout": f"1000000\n{refreshed}\n"})
    assert calls[0] == ("dpkg", action.LISTS_AGE)
    assert (("ansible.builtin.apt", args) in calls) is apt_runs
    assert result["changed"] is apt_runs
    # A refresh apt made is stamped (a hook installed in this run may not have run).
    assert (calls[-1] == ("dpkg", action.STAMP)) is apt_runs


@pytest.mark.parametrize(
    ("apt", "check_mode"),
    [({"failed": True, "msg": "no network"}, False), ({"changed": True}, True)],
)
def test_a_failed_or_checked_refresh_is_not_stamped(apt: dict[str, Any], check_mode: bool) -> None:
    args = {"update_cache": True, "cache_valid_time": 3600}
    _result, calls = run_action(args, {"rc": 0, "stdout": "1000000\n0\n"}, apt, check_mode)
    assert calls[-1] == ("ansible.builtin.apt", args)


def test_an_install_that_refreshes_is_not_stamped_by_the_action() -> None:
    # Its refresh was judged by apt alone (no age read here): the hook stamps it when loaded.
    args = {"name": ["vim"], "update_cache": True, "cache_valid_time": 3600}
    _result, calls = run_action(args, {"rc": 1, "stdout": DPKG})
    assert calls[-1] == ("ansible.builtin.apt", args)
