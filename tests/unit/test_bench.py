"""tools/bench.py: the parts that need no containers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tools import bench, demo


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


def multi_topology() -> bench.Topology:
    topo = bench.TOPOLOGIES["multi"]()
    for n, host in enumerate(topo.hosts, start=2):
        host.ip = f"172.30.0.{n}"
    return topo


def test_multi_has_a_separate_db_host_serving_the_repository() -> None:
    topo = multi_topology()
    db, web1, web2, _ = topo.hosts
    extra = bench.topology_vars(topo, f"git://{db.ip}/demo.git")
    assert extra == {
        "app_repo": "git://172.30.0.2/demo.git",
        "app_db_host": db.ip,
        "app_db_allowed_networks": [f"{web1.ip}/32", f"{web2.ip}/32"],
        "postgres_listen_addresses": f"localhost,{db.ip}",
    }
    assert bench.topology_vars(bench.TOPOLOGIES["single"](), bench.REPO_PATH) == {}


def test_the_multi_inventory_has_the_lb_web_and_db_groups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench, "STATE", tmp_path)
    topo = multi_topology()
    inventory = bench.write_inventory(topo, tmp_path, {}, bench.topology_vars(topo, "git://x"))
    groups = json.loads((inventory / "hosts.yml").read_text())["all"]["children"]
    assert {group: sorted(g["hosts"]) for group, g in groups.items()} == {
        "db": [f"{bench.PREFIX}db"],
        "web": [f"{bench.PREFIX}web1", f"{bench.PREFIX}web2"],
        "lb": [f"{bench.PREFIX}lb"],
    }
    for group in groups.values():
        for host in group["hosts"].values():
            assert host["app_private_address"] == host["ansible_host"]
    app = json.loads((inventory / "group_vars" / "all" / "main.yml").read_text())
    assert app["app_repo"] == "git://x"
    assert topo.front == f"{bench.PREFIX}lb"
    # The db host's firewall lets the app hosts fetch from its git daemon.
    db = json.loads((inventory / "group_vars" / "db.yml").read_text())
    assert db["app_firewall_allow"] == [bench.GIT_DAEMON_RULE]
    assert bench.GIT_DAEMON_RULE["port"] == 9418
    assert "groups['web']" in str(bench.GIT_DAEMON_RULE["sources"])
    single = bench.write_inventory(bench.TOPOLOGIES["single"](), tmp_path / "one", {}, {})
    assert not (single / "group_vars" / "db.yml").exists()


def test_an_earlier_run_s_topologies_are_kept_beside_this_run_s() -> None:
    earlier = {
        "date": "2026-11-21T01:00:00+00:00",
        "probe": {"rate": 60.0},
        "topologies": {
            "single": {"available": True, "ours": {}},
            "multi": {"available": False, "reason": "not yet"},
        },
    }
    results: dict[str, Any] = {"topologies": {"multi": {"available": True}}}
    bench.keep_earlier(results, earlier)
    assert list(results["topologies"]) == ["single", "multi"]
    single = results["topologies"]["single"]
    assert single["from_run"] == {"date": earlier["date"], "probe": {"rate": 60.0}}
    assert results["topologies"]["multi"] == {"available": True}


def test_the_summary_says_the_naive_baseline_is_single_host_only() -> None:
    results = {"topologies": {"multi": {"available": True, "naive": {"note": "single only"}}}}
    assert any("single only" in line for line in bench.summary_lines(results))


def test_host_work_sums_the_summary_lines_of_the_run() -> None:
    text = (
        "TASK [Switch | Move traffic] ...\n host work 9.9 s (not a summary)\n"
        "TASK [Summary | Print the release, the batches and one line per host] ***\n"
        '"web1: r on green (was a on blue), host work 2.5 s (start 1.0)",\n'
        '"web2: r on blue (was a on green), host work 1.25 s (start 0.5)",\n'
    )
    assert bench.host_work(text) == 3.75
    # The JSON report's task after the printed summary does not hide it.
    with_report = text + "TASK [Summary | Write the run's report as JSON] ***\nok: [web1]\n"
    assert bench.host_work(with_report + "PLAY RECAP ***\n") == 3.75
    assert bench.host_work("TASK [Summary | x]\nweb1: unchanged, serving r\n") is None


def test_ratios_follow_the_issue_targets() -> None:
    def entry(seconds: float) -> dict[str, float]:
        return {"seconds": seconds}

    results: dict[str, Any] = {
        "topologies": {
            "single": {
                "ours": {
                    "demo": {"release": entry(6.0), "rollback": entry(3.0)},
                    "timings_s": {"noop_rerun": 10.0, "first_converge": 80.0},
                },
                "naive": {"demo": {"release": entry(3.0), "rollback": entry(3.0)}},
            },
            "multi": {"ours": {"demo": {"release": entry(9.0)}}},
        }
    }
    assert bench.ratios(results) == {
        "release_vs_naive": 2.0,
        "rollback_vs_naive": 1.0,
        "noop_vs_first_converge": 0.125,
        "multi_release_vs_single": 1.5,
    }
    # The releases without load, when both topologies have them.
    results["topologies"]["single"]["ours"]["demo"]["release_unloaded"] = entry(4.0)
    assert "multi_release_vs_single_unloaded" not in bench.ratios(results)
    results["topologies"]["multi"]["ours"]["demo"]["release_unloaded"] = entry(5.6)
    assert bench.ratios(results)["multi_release_vs_single_unloaded"] == 1.4


def test_the_summary_has_a_row_for_the_releases_without_load() -> None:
    quiet = {"seconds": 4.1, "runs_s": [4.0, 4.1, 4.3], "host_work_s": 0.7}
    results = {
        "topologies": {"single": {"available": True, "ours": {"demo": {"release_unloaded": quiet}}}}
    }
    rows = [line for line in bench.summary_lines(results) if "no load" in line]
    assert rows == [
        f"{'single':8} {'ours':6} {'demo':12} {'release':14}     4.1 "
        "no load: runs [4.0, 4.1, 4.3], host work 0.7 s"
    ]


SUMMARY = (
    "TASK [Build | Mirror, check the project, export, build the venv] ***\n"
    "TASK [Summary | Print the release, the batches and one line per host] ***\n"
    "ok: [djdeploy-bench-one] =>\n    msg:\n    - 'release of demo: r (commit c), 1 of 1 host(s)'\n"
    "    - 'djdeploy-bench-one: r on blue (was a on green), host work 2.5 s (prepare 0.3,\n"
    "      start 1.0), build 31.4 s (install\n      18.25 s with uv)'\n"
    "PLAY RECAP ***\nBuild | Mirror, check the project, export, build the venv ---- 31.50s\n"
)


def test_build_work_reads_each_host_s_build_from_the_folded_summary() -> None:
    assert bench.build_work(SUMMARY) == [{"build_s": 31.4, "install_s": 18.25, "installer": "uv"}]
    assert bench.host_work(SUMMARY) == 2.5
    reused = "TASK [Summary | x]\n- 'web1: r on blue (was a on green), host work 1.0 s (start\n"
    reused += "  1.0), build 3.5 s (venv reused)'\n- 'web2: r on blue (was a on green), host"
    reused += " work 1.0 s (start 1.0), build 2.0 s (install 1.5 s with pip)'\n"
    assert bench.build_work(reused) == [
        {"build_s": 3.5, "install_s": None, "installer": None},
        {"build_s": 2.0, "install_s": 1.5, "installer": "pip"},
    ]
    assert bench.build_work("TASK [Summary | x]\nweb1: unchanged, serving r\n") == []


def test_an_installer_run_keeps_the_seconds_and_the_build() -> None:
    run = bench.Run(40.2, 12, 2.5, [{"build_s": 31.4, "install_s": 18.25, "installer": "uv"}])
    assert bench.installer_run(run, "uv") == {
        "app_installer": "uv",
        "seconds": 40.2,
        "build_s": 31.4,
        "install_s": 18.25,
        "installer": "uv",
        "host_work_s": 2.5,
    }
    assert bench.installer_run(bench.Run(1.0, 0), "pip")["install_s"] is None


def requirements_results() -> dict[str, Any]:
    def run(installer: str, seconds: float, install: float) -> dict[str, Any]:
        return {
            "app_installer": installer,
            "seconds": seconds,
            "build_s": install + 10,
            "install_s": install,
            "installer": installer,
            "host_work_s": 2.5,
        }

    return {
        "package": bench.REQUIREMENTS_PACKAGE,
        "uv_warmup": run("uv", 30.0, 5.0),
        "pip": run("pip", 40.0, 20.0),
        "uv": run("uv", 30.0, 5.0),
    }


def test_the_summary_has_a_row_per_installer_of_the_requirements_release() -> None:
    results = {
        "topologies": {
            "single": {"available": True, "ours": {"requirements_release": requirements_results()}}
        }
    }
    rows = [line for line in bench.summary_lines(results) if "reqs" in line]
    assert [row.split()[:6] for row in rows] == [
        ["single", "ours", "demo", "reqs", "(pip)", "40.0"],
        ["single", "ours", "demo", "reqs", "(uv)", "30.0"],
    ]
    assert rows[0].endswith(
        f"no load: build 30.0 s, install 20.0 s with pip (+{bench.REQUIREMENTS_PACKAGE})"
    )
    assert bench.ratios(results) == {
        "requirements_release_uv_vs_pip": 0.75,
        "install_uv_vs_pip": 0.25,
    }


def test_a_requirements_commit_adds_the_pinned_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts: list[str] = []
    monkeypatch.setattr(demo, "sh", lambda *cmd, **kw: scripts.append(cmd[-1]))
    bench.push_commit("c", "reqs", "six==1.17.0")
    bench.push_commit("c", "code only")
    added = "grep -qxF 'six==1.17.0' requirements.txt || echo 'six==1.17.0' >> requirements.txt;"
    assert added in scripts[0]
    assert "requirements.txt" not in scripts[1]
    assert all("git push -q origin HEAD:main" in s for s in scripts)
    name, version = bench.REQUIREMENTS_PACKAGE.split("==")
    assert name and version, "pinned to an exact version"
    assert "'" not in bench.REQUIREMENTS_PACKAGE + bench.WARMUP


def test_the_requirements_release_warms_both_caches_then_starts_both_from_the_same_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    steps: list[tuple[str, ...]] = []

    def push(container: str, message: str, requirement: str = "") -> None:
        steps.append(("push", requirement))

    def playbook(inventory: Path, path: str, *args: str, secrets: Path) -> bench.Run:
        steps.append((Path(path).stem, *args))
        installer = args[-1].partition("=")[2] if args else None
        build = {"build_s": 20.0, "install_s": 9.0, "installer": installer}
        return bench.Run(30.0, 10, 2.0, [build] if installer else [])

    monkeypatch.setattr(bench, "push_commit", push)
    monkeypatch.setattr(bench, "playbook", playbook)
    out: dict[str, Any] = {}
    bench.measure_requirements_release(tmp_path, tmp_path / "s.yml", "c", out)
    assert steps == [
        ("push", bench.WARMUP),
        ("release", "-e", "app_installer=pip"),
        ("push", ""),
        ("release", "-e", "app_installer=uv"),
        ("push", bench.REQUIREMENTS_PACKAGE),
        ("release", "-e", "app_installer=pip"),
        ("rollback",),
        ("push", bench.REQUIREMENTS_PACKAGE),
        ("release", "-e", "app_installer=uv"),
    ]
    assert out["pip"]["installer"] == "pip" and out["uv"]["install_s"] == 9.0
    assert set(out) == {"package", "caches", "pip_warmup", "uv_warmup", "pip", "uv"}


def test_slow_requests_are_lined_up_with_the_switch_steps() -> None:
    probe = {
        "slowest": [
            {"at_s": 5.0, "at_epoch": 1000.0, "ms": 230.0},  # during web1's start
            {"at_s": 9.0, "at_epoch": 1004.0, "ms": 50.0},  # after the switch
            {"at_s": 5.7, "at_epoch": 1000.7, "ms": 400.0},  # spans upstream and public
        ]
    }
    run = {
        "hosts": {
            "web1": {
                "switch": {
                    "steps": [
                        {"step": "start", "seconds": 0.4, "at": 999.9},
                        {"step": "upstream", "seconds": 0.5, "at": 1000.3},
                        {"step": "public", "seconds": 0.1, "at": 1001.0},
                    ]
                }
            },
            "web2": {"switch": {}},
        }
    }
    found = bench.slow_requests_by_step(probe, run)
    assert [f["during"] for f in found] == [
        ["web1:start"],
        ["none"],
        ["web1:upstream", "web1:public"],
    ]
    assert bench.slow_requests_by_step(probe, {})[0]["during"] == ["none"]


def test_a_window_times_several_runs_and_keeps_their_median(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load = bench.Load(rate=60, min_requests=10, max_seconds=5, subnet="10.0.0.0/24")
    windows: list[float] = []

    def during(ip: str, cacert: Path, action: Any, min_requests: int | None = None) -> Any:
        seconds = action()
        windows.append(seconds)
        probe = {"slowest": [{"at_s": 1.0, "at_epoch": 2000.2, "ms": 100.0}]}
        return {"seconds": seconds, "loadavg_1m": [0.1, 0.2], "probe": probe}

    monkeypatch.setattr(load, "during", during)

    def report(at: float) -> dict[str, Any]:
        steps = [{"step": "start", "seconds": 0.5, "at": at}]
        return {"hosts": {"web1": {"switch": {"steps": steps}}}}

    runs = [
        bench.Run(5.0, 1, 0.5, report=report(1000.0)),
        bench.Run(4.0, 1, 0.7, report=report(2000.0)),
        bench.Run(9.0, 1, None, report=report(3000.0)),
    ]
    asked: list[int] = []

    def run(n: int) -> bench.Run:
        asked.append(n)
        return runs[n]

    window = load.repeated("10.0.0.2", Path("ca.pem"), run)
    assert asked == list(range(bench.RUNS_PER_WINDOW)) == [0, 1, 2]
    assert windows == [5.0]
    assert window["seconds"] == 5.0 and window["runs_s"] == [5.0, 4.0, 9.0]
    # The floor is the median of the runs that switched a host.
    assert window["host_work_s"] == 0.6
    # The slow request fell in the second run's start.
    assert window["slowest_during"][0]["during"] == ["web1#2:start"]


def test_one_runs_report_keeps_its_host_names() -> None:
    run = bench.Run(1.0, 0, report={"hosts": {"web1": {"switch": {}}}})
    assert bench.merged_reports([run]) == {"hosts": {"web1": {"switch": {}}}}
    assert bench.median_run([run]) == {"seconds": 1.0, "runs_s": [1.0], "host_work_s": None}
