"""The firewall filter (playbooks/filter_plugins/djdeploy_firewall.py): rules from the groups."""

from __future__ import annotations

from typing import Any

import pytest

from .loader import load

firewall = load("playbooks/filter_plugins/djdeploy_firewall.py")

CLUSTER = {"lb": ["lb"], "web": ["web1", "web2"], "db": ["db"]}
ADDRESSES = {"lb": "10.0.0.2", "web1": "10.0.0.3", "web2": "10.0.0.4", "db": "10.0.0.5"}


def rules(host: str, groups: Any = None, **kwargs: Any) -> dict[str, Any]:
    found = firewall.djdeploy_firewall_rules(
        host, CLUSTER if groups is None else groups, ADDRESSES, **kwargs
    )
    return {rule["name"]: rule for rule in found}


def test_the_balancer_accepts_ssh_and_https_only() -> None:
    lb = rules("lb")
    assert set(lb) == {"ssh", "https"}
    assert lb["ssh"] == {
        "name": "ssh",
        "proto": "tcp",
        "ports": [22],
        "any": True,
        "ipv4": [],
        "ipv6": [],
    }
    assert lb["https"]["ports"] == [80, 443] and lb["https"]["any"]


def test_app_hosts_behind_balancers_accept_the_backend_port_from_them_only() -> None:
    web = rules("web1", backend_port="8080")
    assert set(web) == {"ssh", "backend"}
    assert web["backend"]["ports"] == [8080]
    assert web["backend"]["ipv4"] == ["10.0.0.2/32"] and not web["backend"]["any"]


def test_the_db_host_accepts_postgresql_from_the_app_hosts_only() -> None:
    db = rules("db")
    assert set(db) == {"ssh", "postgresql"}
    assert db["postgresql"]["ports"] == [5432]
    assert db["postgresql"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32"]


def test_web_hosts_without_balancers_terminate_tls() -> None:
    groups = {"web": ["web1", "web2"], "db": ["db"]}
    assert set(rules("web1", groups)) == {"ssh", "https"}
    assert rules("db", groups)["postgresql"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32"]


def test_one_host_without_an_address_gets_no_database_rule() -> None:
    """web and db on one host: PostgreSQL is reached over loopback, never opened to all."""
    found = firewall.djdeploy_firewall_rules(
        "stack", {"web": ["stack"], "db": ["stack"]}, {"stack": ""}
    )
    assert [rule["name"] for rule in found] == ["ssh", "https"]


def test_ssh_from_admin_networks_only_both_families() -> None:
    ssh = rules("db", admin_networks=["2001:db8::/32", "192.0.2.7", "198.51.100.0/24"])["ssh"]
    assert not ssh["any"]
    assert ssh["ipv4"] == ["192.0.2.7/32", "198.51.100.0/24"]
    assert ssh["ipv6"] == ["2001:db8::/32"]


@pytest.mark.parametrize("bad", [["10.0.0.0/33"], ["intranet"], ["10.0.0.300"], "10.0.0.0/8"])
def test_an_admin_network_that_is_not_a_cidr_is_refused(bad: Any) -> None:
    with pytest.raises(firewall.FirewallError, match="app_admin_networks"):
        rules("lb", admin_networks=bad)


@pytest.mark.parametrize("port", [0, None, "", False])
def test_ssh_cannot_be_turned_off(port: Any) -> None:
    with pytest.raises(firewall.FirewallError, match="app_ssh_port: SSH access cannot be"):
        rules("lb", ssh_port=port)


@pytest.mark.parametrize("port", [65536, -1, "ssh", True])
def test_a_bad_port_is_refused(port: Any) -> None:
    with pytest.raises(firewall.FirewallError, match="app_ssh_port"):
        rules("lb", ssh_port=port)


def test_extra_rules() -> None:
    extra = [
        {"port": 9418, "sources": ["10.0.0.3/32"], "name": "git"},
        {"port": 53, "proto": "udp"},
    ]
    db = rules("db", extra=extra)
    assert db["git"]["ipv4"] == ["10.0.0.3/32"] and db["git"]["proto"] == "tcp"
    assert db["extra-1"]["any"] and db["extra-1"]["proto"] == "udp"
    assert "git" not in rules("lb")


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ([{"proto": "tcp"}], r"app_firewall_allow\[0\]"),
        ([{"port": 1, "proto": "icmp"}], r"app_firewall_allow\[0\].proto"),
        ([{"port": 1, "sources": ["x"]}], r"app_firewall_allow\[0\].sources"),
        ([{"port": 70000}], r"app_firewall_allow\[0\].port"),
        ("9418", "app_firewall_allow"),
    ],
)
def test_bad_extra_rules_are_refused(extra: Any, setting: str) -> None:
    with pytest.raises(firewall.FirewallError, match=setting):
        rules("db", extra=extra)


def test_registered_as_a_filter_that_raises_ansible_errors() -> None:
    from ansible.errors import AnsibleFilterError

    flt = firewall.FilterModule().filters()["djdeploy_firewall_rules"]
    assert flt("lb", CLUSTER, ADDRESSES)[0]["name"] == "ssh"
    with pytest.raises(AnsibleFilterError, match="app_admin_networks"):
        flt("lb", CLUSTER, ADDRESSES, admin_networks=["nope"])


def test_redis_only_on_the_redis_hosts_from_the_app_and_worker_hosts() -> None:
    groups = {**CLUSTER, "worker": ["worker1"]}
    addresses = {**ADDRESSES, "worker1": "10.0.0.7"}

    def named(host: str, **kwargs: Any) -> dict[str, Any]:
        found = firewall.djdeploy_firewall_rules(host, groups, addresses, **kwargs)
        return {rule["name"]: rule for rule in found}

    assert "redis" not in named("db")  # the app does not use Redis
    db = named("db", redis_hosts=["db"], redis_port="6380")
    assert db["redis"]["ports"] == [6380] and not db["redis"]["any"]
    assert db["redis"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32", "10.0.0.7/32"]
    assert all("redis" not in named(h, redis_hosts=["db"]) for h in ("lb", "web1", "worker1"))
    # A web host that is the redis host reaches it over loopback: only the other clients.
    assert named("web1", redis_hosts=["web1"])["redis"]["ipv4"] == ["10.0.0.4/32", "10.0.0.7/32"]


def test_postgresql_and_redis_from_the_app_hosts_with_worker_only_hosts() -> None:
    """app_hosts (djdeploy_app_hosts): the web hosts and the worker-only hosts, whatever their
    group's name; the db host that is one of them reaches both over loopback."""
    groups = {**CLUSTER, "offloaders": ["db", "worker1"]}
    addresses = {**ADDRESSES, "worker1": "10.0.0.7"}
    apps = ["web1", "web2", "db", "worker1"]
    found = firewall.djdeploy_firewall_rules(
        "db", groups, addresses, redis_hosts=["db"], app_hosts=apps
    )
    named = {rule["name"]: rule for rule in found}
    assert named["postgresql"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32", "10.0.0.7/32"]
    assert named["redis"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32", "10.0.0.7/32"]
    # Without app_hosts: the web and worker groups (as before).
    plain = {r["name"]: r for r in firewall.djdeploy_firewall_rules("db", CLUSTER, ADDRESSES)}
    assert plain["postgresql"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32"]
