"""Where Redis runs and how the app reaches it, from the inventory's groups (one place).

Redis is opt-in (``app_redis``). playbooks/wiring.yml calls these filters and hands the results
to the roles: the redis hosts to the provisioning play and the firewall filter, the bind
addresses to the redis role, the URL to the release role's env file.

- ``djdeploy_redis_hosts``: the ``redis`` group when the inventory has one, else the ``db``
  group; empty when the app does not ask for Redis. One server: more than one host is refused
  (the app hosts would each talk to a different, unsynchronised server).
- ``djdeploy_redis_bind``: loopback, plus the host's private address when some client host (the
  app hosts, djdeploy_app_hosts; else the ``web`` and ``worker`` groups) is not the redis host
  and must reach it over the network.
- ``djdeploy_redis_url``: ``redis://:<password>@<address>:<port>/0`` for an app host: loopback on
  the redis host itself, else the redis host's private address.

Errors name the inventory setting to fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

DOCUMENTATION = """
name: djdeploy_redis_hosts
short_description: The hosts Redis runs on, and how the app hosts reach it
description:
  - djdeploy_redis_hosts(groups, enabled) is the redis group, else the db group, when enabled.
  - djdeploy_redis_bind(host, groups, redis_hosts, address) the addresses Redis listens on.
  - djdeploy_redis_url(host, redis_hosts, addresses, password, port) the app's REDIS_URL.
options:
  _input:
    description: The inventory's groups (djdeploy_redis_hosts) or the host (the other two).
    required: true
  enabled:
    description: app_redis.
    type: bool
"""

EXAMPLES = """
djdeploy_redis_hosts: "{{ groups | djdeploy_redis_hosts(app_redis) }}"
release_redis_url: >-
  {{ inventory_hostname | djdeploy_redis_url(djdeploy_redis_hosts, addresses,
     app_redis_password, 6379) }}
"""

RETURN = """
_value:
  description: A list of host names, a list of addresses, or a URL ('' without Redis).
  type: raw
"""

LOOPBACK = ["127.0.0.1", "-::1"]
CLIENT_GROUPS = ("web", "worker")
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0", "")


class RedisError(ValueError):
    """An inventory value Redis's placement cannot be derived from (the message names it)."""


def _enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    raise RedisError(f"app_redis: must be true or false (got {value!r})")


def djdeploy_redis_hosts(groups: Mapping[str, Sequence[str]], enabled: Any) -> list[str]:
    """The host Redis runs on (a list of one), or [] when the app does not use Redis."""
    if not _enabled(enabled):
        return []
    redis = list(groups.get("redis") or [])
    hosts, group = (redis, "redis") if redis else (list(groups.get("db") or []), "db")
    if not hosts:
        raise RedisError(
            "app_redis: Redis runs on the host of a `redis` group, else on the db host; "
            "the inventory has neither"
        )
    if len(hosts) > 1:
        raise RedisError(
            f"app_redis: Redis runs on one host, the `{group}` group has {len(hosts)} "
            f"({', '.join(hosts)}); put one host in a `redis` group"
        )
    return hosts


def clients(groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The hosts that talk to Redis: the app hosts and the workers."""
    found: list[str] = []
    for group in CLIENT_GROUPS:
        found += [name for name in groups.get(group) or [] if name not in found]
    return found


def _address(value: Any, host: str) -> str:
    text = str(value or "").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise RedisError(
            f"app_private_address of {host}: {text!r} is not an IP address "
            "(Redis binds it and the app hosts connect to it)"
        ) from None


def djdeploy_redis_bind(
    host: str,
    groups: Mapping[str, Sequence[str]],
    redis_hosts: Sequence[str],
    address: Any = "",
    app_hosts: Sequence[str] | None = None,
) -> list[str]:
    """Loopback, and the private address when a client host (app_hosts, default the web and
    worker groups) is not this redis host."""
    if host not in redis_hosts:
        return []
    users = clients(groups) if app_hosts is None else list(app_hosts)
    remote = [name for name in users if name not in redis_hosts]
    if not remote:
        return list(LOOPBACK)
    private = _address(address, host)
    return list(LOOPBACK) + ([private] if private not in ("127.0.0.1", "::1") else [])


def djdeploy_redis_url(
    host: str,
    redis_hosts: Sequence[str],
    addresses: Mapping[str, Any],
    password: Any,
    port: Any = 6379,
    database: int = 0,
) -> str:
    """The app host's REDIS_URL ('' when the app does not use Redis)."""
    if not redis_hosts:
        return ""
    if not isinstance(password, str) or not password:
        raise RedisError("app_redis_password: set it in the vault (required with app_redis)")
    server = redis_hosts[0]
    if host in redis_hosts:
        where = "127.0.0.1"
    else:
        where = _address(addresses.get(server), server)
        if ":" in where:
            where = f"[{where}]"
    return f"redis://:{quote(password, safe='')}@{where}:{int(port)}/{database}"


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "djdeploy_redis_hosts": _wrap(djdeploy_redis_hosts),
            "djdeploy_redis_bind": _wrap(djdeploy_redis_bind),
            "djdeploy_redis_url": _wrap(djdeploy_redis_url),
        }


def _wrap(function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter as Ansible calls it: a RedisError becomes Ansible's filter error."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except RedisError as exc:
            from ansible.errors import AnsibleFilterError

            raise AnsibleFilterError(str(exc)) from None

    return call
