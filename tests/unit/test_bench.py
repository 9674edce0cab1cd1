"""tools/bench.py: the parts that need no containers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tools import bench


def test_playbook_groups_are_read_from_the_playbooks() -> None:
    assert {"all", "web", "db"} <= bench.playbook_groups()


def test_multi_is_reported_unavailable_without_an_lb_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "playbook_groups", lambda: {"all", "web", "db"})
    monkeypatch.setattr(bench, "cleanup", lambda: pytest.fail("no container may be touched"))
    args = argparse.Namespace(rate=60.0, min_requests=3000, max_seconds=600, skip_naive=False)
    result = bench.run_topology("multi", args, "debian12")
    assert result["available"] is False
    assert "not available in this branch" in result["reason"]


def test_the_inventory_links_the_shared_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench, "STATE", tmp_path)
    topo = bench.TOPOLOGIES["single"]()
    topo.hosts[0].ip = "172.30.0.2"
    inventory = bench.write_inventory(topo, tmp_path, {"DEMO_BOOT_DELAY": "2"}, {})
    shared = inventory / "group_vars" / "all" / "00-shared.yml"
    assert shared.resolve() == (bench.ROOT / "group_vars" / "all" / "main.yml").resolve()
    app = json.loads((inventory / "group_vars" / "all" / "main.yml").read_text())
    assert app["app_env"] == {"DEMO_BOOT_DELAY": "2"}
    hosts = json.loads((inventory / "hosts.yml").read_text())
    groups = hosts["all"]["children"]
    assert set(groups) == {"web", "db"}
    assert groups["web"]["hosts"][f"{bench.PREFIX}one"]["ansible_host"] == "172.30.0.2"


def test_every_bench_container_name_has_the_prefix() -> None:
    for make in bench.TOPOLOGIES.values():
        assert all(h.name.startswith(bench.PREFIX) for h in make().hosts)
