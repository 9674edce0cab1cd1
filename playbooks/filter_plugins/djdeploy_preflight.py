"""The preflight's checks of the inventory's settings, in one call (playbooks/preflight.yml).

Every run starts by refusing bad input before it connects to a host or changes anything: the
app's names, how it is served, the secrets, TLS, the host's address, PostgreSQL over TLS and
Redis. ``djdeploy_preflight_errors`` takes what the preflight gathered from the inventory for
one host and returns one message per problem, each naming the variable to fix; the preflight
asserts the list is empty and shows every message at once. One task instead of one per check:
the controller's cost of a task grows with the hosts of the play (0.04-0.06 s per check with
four hosts).

The values arrive as the inventory holds them (a string ``"maybe"`` stays a string), so type
checks are the filter's: ``app_db_tls`` and ``app_redis`` must be booleans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

DOCUMENTATION = """
name: djdeploy_preflight_errors
short_description: The problems of the inventory's settings for one host (empty when none)
description:
  - Checks app_name, app_server_names, app_repo, the app server's settings (their messages come
    from djdeploy_app_server_errors), the secrets, the TLS mode, the host's address (multi-host
    inventories), PostgreSQL over TLS (app_db_tls) and Redis (app_redis).
options:
  _input:
    description: The values the preflight reads for the host (playbooks/preflight.yml).
    type: dict
    required: true
"""

APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
SECRETS = ("app_secret_key", "app_db_password")
TLS_MODES = ("selfsigned", "files", "certbot")
LOCAL_DB_HOSTS = ("localhost", "127.0.0.1", "::1")
REDIS_PASSWORD_FORBIDDEN = re.compile(r"[\s\"'\\]")


def as_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: yes/on/1/true (any case) are true, anything else false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true")
    return bool(value == 1)


def as_int(value: Any) -> int:
    """Jinja's ``int`` filter: the integer, or 0 when the value is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def app_errors(s: Mapping[str, Any]) -> list[str]:
    """app_name, app_server_names, app_repo."""
    name = s.get("app_name")
    if (
        isinstance(name, str)
        and APP_NAME.match(name)
        and _length(s.get("app_server_names")) > 0
        and _length(s.get("app_repo")) > 0
    ):
        return []
    return [
        "Set app_name (lowercase, ^[a-z][a-z0-9_-]{0,30}$; got "
        f"'{name}'), app_server_names (the site's host names) and app_repo (the git repository) "
        "in the inventory's group_vars."
    ]


def secret_errors(s: Mapping[str, Any]) -> list[str]:
    """The secrets every app needs (only whether each is defined; values never reach here)."""
    defined: Mapping[str, Any] = s.get("secrets_defined") or {}
    missing = [name for name in SECRETS if not defined.get(name)]
    if not missing:
        return []
    return [
        f"Missing secret(s): {', '.join(missing)}. Put them in "
        "inventories/<env>/group_vars/all/vault.yml (ansible-vault) and pass the vault password "
        '(--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE); see README "Secrets".'
    ]


def tls_errors(s: Mapping[str, Any]) -> list[str]:
    """app_tls_mode, and the ACME terms accepted in certbot mode."""
    mode = s.get("app_tls_mode")
    if mode in TLS_MODES and (mode != "certbot" or as_bool(s.get("app_acme_agree_tos"))):
        return []
    return [
        f"app_tls_mode must be selfsigned, files or certbot (got '{mode}'); certbot mode "
        "registers an ACME account, which needs app_acme_agree_tos=true (you accept the CA's "
        "terms of service; Let's Encrypt: the Subscriber Agreement)."
    ]


def address_errors(s: Mapping[str, Any]) -> list[str]:
    """A multi-host inventory: the address the other hosts reach this one at, the port."""
    if not s.get("multi_host"):
        return []
    port = s.get("app_backend_port")
    if _length(s.get("app_private_address")) > 0 and as_int(port) > 0:
        return []
    return [
        f"{s.get('host')} has no app_private_address (the address the other hosts reach it at); "
        "set it in the inventory's host_vars. app_backend_port must be a port number (got "
        f"{port})."
    ]


def db_tls_errors(s: Mapping[str, Any]) -> list[str]:
    """app_db_tls: a boolean; an app host that is not the db host names the db host."""
    tls = s.get("app_db_tls")
    db_host = "" if s.get("app_db_host") is None else str(s.get("app_db_host"))
    named = bool(db_host) and db_host not in LOCAL_DB_HOSTS and not db_host.startswith("/")
    if isinstance(tls, bool) and (
        not tls or s.get("is_db_host") or not s.get("is_app_host") or named
    ):
        return []
    return [
        f"app_db_tls must be true or false (got '{tls}'); with app_db_tls on, an app host that is "
        f"not the db host ({s.get('host')}) needs app_db_host set to the address or name it "
        "reaches the db host at, the name the db's certificate is issued for (got "
        f"'{db_host}'; not localhost or a socket directory)."
    ]


def redis_errors(s: Mapping[str, Any]) -> list[str]:
    """app_redis: a boolean; when on, one redis host and a usable password."""
    enabled = s.get("app_redis")
    password = s.get("app_redis_password")
    hosts: Sequence[Any] = s.get("redis_hosts") or []
    if isinstance(enabled, bool) and (
        not enabled
        or (
            len(hosts) == 1
            and isinstance(password, str)
            and len(password) >= 16
            and not REDIS_PASSWORD_FORBIDDEN.search(password)
        )
    ):
        return []
    return [
        f"app_redis must be true or false (got '{enabled}'); with app_redis on, set "
        "app_redis_password in the inventory's vault (group_vars/all/vault.yml): at least 16 "
        "characters, no whitespace, quotes or backslashes (e.g. `openssl rand -hex 24`)."
    ]


def djdeploy_preflight_errors(settings: Mapping[str, Any]) -> list[str]:
    """Every problem of one host's settings, in the order an operator would fix them."""
    return [
        *app_errors(settings),
        *(settings.get("app_server_errors") or []),
        *secret_errors(settings),
        *tls_errors(settings),
        *address_errors(settings),
        *db_tls_errors(settings),
        *redis_errors(settings),
    ]


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {"djdeploy_preflight_errors": djdeploy_preflight_errors}
