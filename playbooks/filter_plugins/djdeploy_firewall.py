"""The inbound firewall rules of a host, derived from the inventory's groups (one place).

playbooks/wiring.yml calls ``djdeploy_firewall_rules`` for each host and hands the result to the
hardening role (``hardening_firewall_rules``), whose template only renders it. The topology
decides what a host accepts, besides established traffic and loopback:

- SSH on ``ssh_port`` from ``admin_networks`` (from anywhere when the list is empty);
- 80 and 443 on hosts that terminate TLS: the ``lb`` hosts, or the ``web`` hosts when there is
  no ``lb`` group;
- the backend port on ``web`` hosts behind balancers, from the ``lb`` hosts only;
- PostgreSQL on ``db`` hosts, from the app hosts only: ``app_hosts`` (djdeploy_app_hosts: the
  web hosts and the worker-only hosts that run app processes), else the ``web`` and ``worker``
  groups;
- Redis on the ``redis_hosts`` (djdeploy_redis_hosts: empty unless the app uses Redis), from
  the same app hosts only;
- the inventory's ``extra`` rules (e.g. a service of its own).

A rule whose source list ends up empty (say the db host is also the only web host: the app
reaches PostgreSQL over loopback) is left out: an empty list never means "from anywhere".
Errors name the inventory setting to fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DOCUMENTATION = """
name: djdeploy_firewall_rules
short_description: Inbound firewall rules of a host from the inventory's groups
description:
  - Computes the rules the hardening role renders into nftables (ports, protocol, sources).
options:
  _input:
    description: The host the rules are for (inventory_hostname).
    type: str
    required: true
  groups:
    description: The inventory's groups (C(groups)).
    type: dict
    required: true
  addresses:
    description: Each host's private address (app_private_address); empty ones are skipped.
    type: dict
    required: true
  ssh_port:
    description: Port sshd listens on (app_ssh_port).
    type: int
  admin_networks:
    description: CIDRs SSH is accepted from (app_admin_networks); empty means anywhere.
    type: list
  backend_port:
    description: Port of the app hosts' backend vhost behind balancers (app_backend_port).
    type: int
  db_port:
    description: PostgreSQL's port.
    type: int
  redis_hosts:
    description: The hosts Redis runs on (filter djdeploy_redis_hosts); empty without Redis.
    type: list
  redis_port:
    description: Redis's port.
    type: int
  app_hosts:
    description:
      - The hosts that run the app (djdeploy_app_hosts), the sources of PostgreSQL and Redis;
        default the web and worker groups.
    type: list
  extra:
    description: Extra rules (app_firewall_allow), each with port, proto and sources.
    type: list
"""

EXAMPLES = """
hardening_firewall_rules: >-
  {{ inventory_hostname | djdeploy_firewall_rules(groups, addresses, ssh_port=22,
     admin_networks=['192.0.2.0/24'], backend_port=8000) }}
"""

RETURN = """
_value:
  description: >-
    Rules, each a dict with name, proto (tcp or udp), ports (list of int), any (accept from
    anywhere), ipv4 and ipv6 (source networks when not any).
  type: list
"""

Rule = dict[str, Any]


class FirewallError(ValueError):
    """An inventory value the firewall cannot be derived from (the message names it)."""


def _port(value: Any, setting: str) -> int:
    if isinstance(value, bool):
        raise FirewallError(f"{setting}: {value!r} is not a port")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise FirewallError(f"{setting}: {value!r} is not a port") from None
    if not 0 < port < 65536:
        raise FirewallError(f"{setting}: {value!r} is not a port (1-65535)")
    return port


def _networks(values: Any, setting: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise FirewallError(f"{setting}: expected a list of CIDRs, got {values!r}")
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise FirewallError(
                f"{setting}: {value!r} is not a CIDR (e.g. 192.0.2.0/24 or 2001:db8::/32)"
            ) from None
    return networks


def _rule(name: str, proto: str, ports: list[int], sources: list[Any] | None) -> Rule | None:
    """A rule from anywhere (sources None) or from the given networks; None when none are left."""
    if sources is None:
        return {"name": name, "proto": proto, "ports": ports, "any": True, "ipv4": [], "ipv6": []}
    unique = sorted(set(sources), key=lambda net: (net.version, net))
    if not unique:
        return None
    return {
        "name": name,
        "proto": proto,
        "ports": ports,
        "any": False,
        "ipv4": [str(net) for net in unique if net.version == 4],
        "ipv6": [str(net) for net in unique if net.version == 6],
    }


def _hosts_of(
    names: Sequence[str], addresses: Mapping[str, Any]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The hosts' addresses as one-address networks (hosts without an address are skipped)."""
    found = [str(addresses.get(name) or "").strip() for name in names]
    return _networks([a for a in found if a], "app_private_address")


def djdeploy_firewall_rules(
    host: str,
    groups: Mapping[str, Sequence[str]],
    addresses: Mapping[str, Any],
    ssh_port: Any = 22,
    admin_networks: Any = (),
    backend_port: Any = 8000,
    db_port: Any = 5432,
    extra: Any = (),
    redis_hosts: Sequence[str] = (),
    redis_port: Any = 6379,
    app_hosts: Sequence[str] | None = None,
) -> list[Rule]:
    """The inbound rules of ``host``, in the order they are rendered."""
    lb = list(groups.get("lb") or [])
    web = list(groups.get("web") or [])
    db = list(groups.get("db") or [])
    if app_hosts is None:
        app_hosts = list(dict.fromkeys(web + list(groups.get("worker") or [])))
    apps = list(app_hosts)
    if ssh_port in (None, "", 0, False):
        raise FirewallError(
            "app_ssh_port: SSH access cannot be turned off (the hosts are managed over SSH); "
            "set the port sshd listens on"
        )
    rules: list[Rule | None] = []
    admins = _networks(admin_networks, "app_admin_networks")
    rules.append(_rule("ssh", "tcp", [_port(ssh_port, "app_ssh_port")], admins or None))
    if host in lb or (host in web and not lb):
        rules.append(_rule("https", "tcp", [80, 443], None))
    if host in web and lb:
        port = _port(backend_port, "app_backend_port")
        rules.append(_rule("backend", "tcp", [port], _hosts_of(lb, addresses)))
    if host in db:
        port = _port(db_port, "postgres port")
        # The app hosts elsewhere; on the db host itself the app reaches PostgreSQL over loopback.
        remote = [h for h in apps if h not in db]
        rules.append(_rule("postgresql", "tcp", [port], _hosts_of(remote, addresses)))
    if host in redis_hosts:
        port = _port(redis_port, "redis_port")
        # The app and worker hosts; the redis host itself reaches Redis over loopback.
        remote = [h for h in apps if h not in redis_hosts]
        rules.append(_rule("redis", "tcp", [port], _hosts_of(remote, addresses)))
    if isinstance(extra, str) or not isinstance(extra, Sequence):
        raise FirewallError(f"app_firewall_allow: expected a list of rules, got {extra!r}")
    for index, item in enumerate(extra):
        setting = f"app_firewall_allow[{index}]"
        if not isinstance(item, Mapping) or "port" not in item:
            raise FirewallError(f"{setting}: expected a dict with port (and proto, sources)")
        proto = str(item.get("proto", "tcp"))
        if proto not in ("tcp", "udp"):
            raise FirewallError(f"{setting}.proto: {proto!r} is not tcp or udp")
        sources = item.get("sources")
        networks = None if sources is None else _networks(sources, f"{setting}.sources")
        name = str(item.get("name", f"extra-{index}"))
        rules.append(_rule(name, proto, [_port(item["port"], f"{setting}.port")], networks))
    return [rule for rule in rules if rule is not None]


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"djdeploy_firewall_rules": _filter}


def _filter(*args: Any, **kwargs: Any) -> list[Rule]:
    """The filter as Ansible calls it: a FirewallError becomes Ansible's filter error."""
    try:
        return djdeploy_firewall_rules(*args, **kwargs)
    except FirewallError as exc:
        from ansible.errors import AnsibleFilterError

        raise AnsibleFilterError(str(exc)) from None
