"""Redis's placement (playbooks/filter_plugins/djdeploy_redis.py) and what follows from it:
the bind addresses, the app's REDIS_URL, the firewall rule and the env file's line."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .loader import load
from .test_db_tls_templates import env_file

redis = load("playbooks/filter_plugins/djdeploy_redis.py")
firewall = load("playbooks/filter_plugins/djdeploy_firewall.py")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = {"lb": ["lb"], "web": ["web1", "web2"], "db": ["db"]}
STACK = {"web": ["stack"], "db": ["stack"]}
ADDRESSES = {
    "lb": "10.0.0.2",
    "web1": "10.0.0.3",
    "web2": "10.0.0.4",
    "db": "10.0.0.5",
    "cache": "10.0.0.6",
    "worker1": "10.0.0.7",
}
PASSWORD = "p@ss/word:with%chars"


def hosts(groups: Any, enabled: Any = True) -> list[str]:
    found: list[str] = redis.djdeploy_redis_hosts(groups, enabled)
    return found


def test_off_by_default_nowhere() -> None:
    assert hosts(CLUSTER, False) == []
    assert hosts(CLUSTER, "false") == []
    assert redis.djdeploy_redis_url("web1", [], ADDRESSES, "") == ""
    assert redis.djdeploy_redis_bind("db", CLUSTER, []) == []
    assert "redis" not in {r["name"] for r in firewall.djdeploy_firewall_rules("db", CLUSTER, {})}


def test_on_the_db_host_unless_there_is_a_redis_group() -> None:
    assert hosts(CLUSTER) == ["db"]
    assert hosts(CLUSTER, "true") == ["db"]
    assert hosts({**CLUSTER, "redis": ["cache"]}) == ["cache"]
    assert hosts({**CLUSTER, "redis": []}) == ["db"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"web": ["web1"]}, "the inventory has neither"),
        ({"web": ["web1"], "db": ["db1", "db2"]}, "the `db` group has 2"),
        ({**CLUSTER, "redis": ["a", "b"]}, "the `redis` group has 2"),
    ],
)
def test_one_redis_host_or_a_clear_error(groups: Any, message: str) -> None:
    with pytest.raises(redis.RedisError, match=f"app_redis: .*{message}"):
        hosts(groups)


def test_app_redis_must_be_a_boolean() -> None:
    with pytest.raises(redis.RedisError, match="app_redis: must be true or false"):
        hosts(CLUSTER, "maybe")


def test_the_single_host_stack_uses_loopback_only() -> None:
    """web and db on one host: no private address bound, no port opened, URL on loopback."""
    found = hosts(STACK)
    assert found == ["stack"]
    assert redis.djdeploy_redis_bind("stack", STACK, found, "") == ["127.0.0.1", "-::1"]
    url = redis.djdeploy_redis_url("stack", found, {"stack": ""}, PASSWORD, 6379)
    assert urlsplit(url).hostname == "127.0.0.1"
    rules = firewall.djdeploy_firewall_rules(
        "stack", STACK, {"stack": "10.0.0.9"}, redis_hosts=found
    )
    assert "redis" not in [rule["name"] for rule in rules]


def test_a_remote_redis_binds_its_private_address() -> None:
    assert redis.djdeploy_redis_bind("db", CLUSTER, ["db"], "10.0.0.5") == [
        "127.0.0.1",
        "-::1",
        "10.0.0.5",
    ]
    assert redis.djdeploy_redis_bind("web1", CLUSTER, ["db"], "10.0.0.3") == []
    with pytest.raises(redis.RedisError, match="app_private_address of db"):
        redis.djdeploy_redis_bind("db", CLUSTER, ["db"], "db.internal")


def test_the_url_reaches_the_redis_host_with_the_encoded_password() -> None:
    url = redis.djdeploy_redis_url("web1", ["db"], ADDRESSES, PASSWORD, "6379")
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "redis",
        "10.0.0.5",
        6379,
        "/0",
    )
    assert parts.username == "" and unquote(parts.password or "") == PASSWORD
    assert "@" not in url.split("@", 1)[0].split("//", 1)[1]
    # An app host that is the redis host talks over loopback.
    assert (
        urlsplit(redis.djdeploy_redis_url("db", ["db"], ADDRESSES, PASSWORD)).hostname
        == "127.0.0.1"
    )
    v6 = redis.djdeploy_redis_url("web1", ["db"], {"db": "2001:db8::5"}, PASSWORD)
    assert urlsplit(v6).hostname == "2001:db8::5" and "[2001:db8::5]:6379" in v6


def test_the_url_needs_the_password() -> None:
    with pytest.raises(redis.RedisError, match="app_redis_password"):
        redis.djdeploy_redis_url("web1", ["db"], ADDRESSES, "")


def test_the_firewall_opens_redis_to_the_app_and_worker_hosts_only() -> None:
    groups = {**CLUSTER, "redis": ["cache"], "worker": ["worker1"]}
    found = hosts(groups)

    def names(host: str) -> dict[str, Any]:
        rules = firewall.djdeploy_firewall_rules(host, groups, ADDRESSES, redis_hosts=found)
        return {rule["name"]: rule for rule in rules}

    rule = names("cache")["redis"]
    assert rule["ports"] == [6379] and not rule["any"]
    assert rule["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32", "10.0.0.7/32"]
    for other in ("db", "lb", "web1", "worker1"):
        assert "redis" not in names(other)
    # Redis on the db host (no redis group): the db host opens it to the app hosts.
    db = firewall.djdeploy_firewall_rules("db", CLUSTER, ADDRESSES, redis_hosts=["db"])
    assert {r["name"]: r for r in db}["redis"]["ipv4"] == ["10.0.0.3/32", "10.0.0.4/32"]
    with pytest.raises(firewall.FirewallError, match="redis_port"):
        firewall.djdeploy_firewall_rules("db", CLUSTER, ADDRESSES, redis_hosts=["db"], redis_port=0)


def test_the_env_file_has_redis_url_only_with_redis() -> None:
    url = redis.djdeploy_redis_url("web1", ["db"], ADDRESSES, PASSWORD)
    assert env_file(True, url)["REDIS_URL"] == url
    assert "REDIS_URL" not in env_file(True)


def test_registered_as_filters_that_raise_ansible_errors() -> None:
    from ansible.errors import AnsibleFilterError

    filters = redis.FilterModule().filters()
    assert filters["djdeploy_redis_hosts"](CLUSTER, True) == ["db"]
    with pytest.raises(AnsibleFilterError, match="app_redis"):
        filters["djdeploy_redis_hosts"]({}, True)
    assert set(filters) == {"djdeploy_redis_hosts", "djdeploy_redis_bind", "djdeploy_redis_url"}


def test_wiring_computes_the_redis_hosts_once() -> None:
    wiring = (ROOT / "playbooks/wiring.yml").read_text()
    assert wiring.count("djdeploy_redis_hosts(") == 1
    provision = (ROOT / "playbooks/provision.yml").read_text()
    assert "inventory_hostname in djdeploy_redis_hosts" in provision


def test_the_bind_follows_the_app_hosts_when_given() -> None:
    """app_hosts (djdeploy_app_hosts): only the redis host itself runs the app: loopback."""
    alone = {"web": ["db"], "db": ["db"]}
    assert redis.djdeploy_redis_bind("db", alone, ["db"], "10.0.0.5", app_hosts=["db"]) == [
        "127.0.0.1",
        "-::1",
    ]
    bound = redis.djdeploy_redis_bind("db", alone, ["db"], "10.0.0.5", app_hosts=["db", "w9"])
    assert bound == ["127.0.0.1", "-::1", "10.0.0.5"]
