"""The preflight's checks (playbooks/filter_plugins/djdeploy_preflight.py): one message per
problem, each naming the variable to fix, the messages operators and the scenarios read."""

from __future__ import annotations

from typing import Any

import pytest

from .loader import load

plugin = load("playbooks/filter_plugins/djdeploy_preflight.py")

GOOD: dict[str, Any] = {
    "host": "web1",
    "multi_host": True,
    "app_name": "demo",
    "app_server_names": ["demo.example.com"],
    "app_repo": "https://git.example.com/demo.git",
    "app_server_errors": [],
    "secrets_defined": {"app_secret_key": True, "app_db_password": True},
    "app_tls_mode": "certbot",
    "app_acme_agree_tos": "yes",
    "app_private_address": "10.0.0.11",
    "app_backend_port": 8000,
    "app_db_tls": True,
    "app_db_host": "db.internal",
    "is_db_host": False,
    "is_app_host": True,
    "app_redis": True,
    "redis_hosts": ["db1"],
    "app_redis_password": "0123456789abcdef0123",
}


def errors(**changes: Any) -> list[str]:
    return list(plugin.djdeploy_preflight_errors({**GOOD, **changes}))


def test_good_settings_have_no_errors() -> None:
    assert errors() == []


@pytest.mark.parametrize(
    "changes",
    [{"app_name": "Demo"}, {"app_name": "a" * 32}, {"app_server_names": []}, {"app_repo": ""}],
)
def test_the_app_names_and_repository(changes: dict[str, Any]) -> None:
    (message,) = errors(**changes)
    assert message.startswith("Set app_name (lowercase, ^[a-z][a-z0-9_-]{0,30}$; got '")
    assert message.endswith(
        "app_server_names (the site's host names) and app_repo (the git repository) in the"
        " inventory's group_vars."
    )


def test_the_app_servers_messages_are_passed_on() -> None:
    assert errors(app_server_errors=["app_server must be wsgi or asgi (got 'foo')"]) == [
        "app_server must be wsgi or asgi (got 'foo')"
    ]


def test_missing_secrets_are_named_never_their_values() -> None:
    (message,) = errors(secrets_defined={"app_secret_key": False, "app_db_password": True})
    assert message.startswith("Missing secret(s): app_secret_key. Put them in inventories/")
    (message,) = errors(secrets_defined={})
    assert message.startswith("Missing secret(s): app_secret_key, app_db_password. ")


@pytest.mark.parametrize(
    ("mode", "agree", "ok"),
    [
        ("selfsigned", False, True),
        ("files", False, True),
        ("certbot", True, True),
        ("certbot", "true", True),
        ("certbot", "no", False),
        ("certbot", False, False),
        ("letsencrypt", True, False),
    ],
)
def test_the_tls_mode_and_the_acme_terms(mode: str, agree: Any, ok: bool) -> None:
    got = errors(app_tls_mode=mode, app_acme_agree_tos=agree)
    assert (got == []) is ok
    if not ok:
        assert got[0].startswith(
            f"app_tls_mode must be selfsigned, files or certbot (got '{mode}')"
        )


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"app_private_address": ""}, False),
        ({"app_backend_port": "http"}, False),
        ({"app_backend_port": "8000"}, True),
        ({"app_private_address": "", "multi_host": False}, True),
    ],
)
def test_a_multi_host_inventory_needs_each_hosts_address(changes: dict[str, Any], ok: bool) -> None:
    got = errors(**changes)
    assert (got == []) is ok
    if not ok:
        assert got[0].startswith("web1 has no app_private_address (the address the other hosts")
        assert got[0].endswith(
            f"must be a port number (got {changes.get('app_backend_port', 8000)})."
        )


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"app_db_tls": "maybe"}, False),
        ({"app_db_tls": "true"}, False),
        ({"app_db_host": "localhost"}, False),
        ({"app_db_host": "/var/run/postgresql"}, False),
        ({"app_db_host": ""}, False),
        ({"app_db_host": "localhost", "is_db_host": True}, True),
        ({"app_db_host": "localhost", "is_app_host": False}, True),
        ({"app_db_host": "localhost", "app_db_tls": False}, True),
    ],
)
def test_database_tls_needs_a_boolean_and_the_db_hosts_name(
    changes: dict[str, Any], ok: bool
) -> None:
    got = errors(**changes)
    assert (got == []) is ok
    if not ok:
        tls = changes.get("app_db_tls", True)
        assert got[0].startswith(
            f"app_db_tls must be true or false (got '{tls}'); with app_db_tls on"
        )
        assert "an app host that is not the db host (web1) needs app_db_host" in got[0]


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"app_redis": "maybe"}, False),
        ({"redis_hosts": []}, False),
        ({"redis_hosts": ["db1", "db2"]}, False),
        ({"app_redis_password": None}, False),
        ({"app_redis_password": "short"}, False),
        ({"app_redis_password": "0123456789 abcdef"}, False),
        ({"app_redis_password": "0123456789'abcdef"}, False),
        ({"app_redis": False, "app_redis_password": None, "redis_hosts": []}, True),
    ],
)
def test_redis_needs_a_boolean_one_host_and_a_usable_password(
    changes: dict[str, Any], ok: bool
) -> None:
    got = errors(**changes)
    assert (got == []) is ok
    if not ok:
        enabled = changes.get("app_redis", True)
        assert got[0].startswith(
            f"app_redis must be true or false (got '{enabled}'); with app_redis"
        )


def test_every_problem_is_listed_in_the_order_to_fix_them() -> None:
    got = errors(app_name="", app_tls_mode="none", app_redis="x")
    assert [m.split(" ", 1)[0] for m in got] == ["Set", "app_tls_mode", "app_redis"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        (1, True),
        ("no", False),
        (None, False),
    ],
)
def test_as_bool_reads_values_like_ansibles_bool_filter(value: Any, expected: bool) -> None:
    assert plugin.as_bool(value) is expected
