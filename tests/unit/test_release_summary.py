"""The release summary filter (playbooks/filter_plugins/djdeploy_summary.py)."""

from __future__ import annotations

from .loader import load

summary = load("playbooks/filter_plugins/djdeploy_summary.py")
NEW = "20260102T000000Z-bbbbbbbb"
OLD = "20260101T000000Z-aaaaaaaa"


def report(seconds: float = 2.5) -> dict[str, object]:
    return {
        "release": NEW,
        "live_color": "green",
        "old_color": "blue",
        "previous_release": OLD,
        "seconds": seconds,
        "steps": [{"step": "start", "seconds": 1.25}, {"step": "public", "seconds": 0.5}],
    }


def test_one_line_per_host_with_batches_and_time() -> None:
    hostvars = {
        "web1": {
            "release_state": {"commit": "bbbbbbbbcccccccc", "live": {"id": OLD}},
            "release_outcome": {"switch": report(), "target": NEW, "batch": ["web1"]},
            "djdeploy_run_started": 100.0,
            "unrelated": "never read",
        },
        "web2": {
            "release_state": {"live": {"id": NEW}},
            "release_outcome": {
                "switch": {"skipped": True},
                "target": NEW,
                "batch": ["web2", "web3"],
            },
            "djdeploy_run_started": 100.2,
        },
        "web3": {"release_outcome": {"batch": ["web2", "web3"]}},
    }
    lines = summary.release_summary(
        hostvars,
        ["web1", "web2", "web3"],
        app="demo",
        action="release",
        url="https://demo.example.com/",
        now=142.0,
    )
    assert lines[0] == (
        f"release of demo: {NEW} (commit bbbbbbbbcccc), 1 of 3 host(s) switched, 42.0 s,"
        " https://demo.example.com/"
    )
    assert lines[1] == "batches: web1 | web2, web3"
    assert lines[2] == (
        f"web1: {NEW} on green (was {OLD} on blue), host work 2.5 s (start 1.2, public 0.5)"
    )
    assert lines[3] == f"web2: unchanged, serving {NEW}"
    assert lines[4] == "web3: unchanged, serving nothing"
    assert len(lines) == 5


def test_only_the_summary_keys_are_read() -> None:
    class Strict(dict[str, object]):
        def __getitem__(self, key: str) -> object:
            assert key in summary.KEYS, key
            return super().__getitem__(key)

    hostvars = {"web1": Strict(release_outcome={"target": NEW}, secret="x")}
    lines = summary.release_summary(
        hostvars, ["web1"], app="demo", action="rollback", url="u", now=1.0
    )
    assert lines[0].startswith(f"rollback of demo: {NEW}, 0 of 1 host(s) switched, unknown time")


def build(**overrides: object) -> dict[str, object]:
    report: dict[str, object] = {
        "changed": True,
        "seconds": 14.26,
        "venv_reused": False,
        "project": {"method": "requirements", "installer": "uv"},
        "steps": [
            {"step": "mirror", "seconds": 0.2},
            {"step": "venv", "seconds": 1.1},
            {"step": "install", "seconds": 8.14},
            {"step": "check", "seconds": 2.0},
        ],
    }
    report.update(overrides)
    return report


def host_line(**facts: object) -> str:
    hostvars = {
        "web1": {
            "release_outcome": {"switch": report(), "target": NEW},
            "release_state": {"commit": "", **facts},
        }
    }
    lines = summary.release_summary(
        hostvars, ["web1"], app="demo", action="release", url="u", now=1.0
    )
    return str(lines[2])


def test_the_host_line_ends_with_the_build_and_its_install_step() -> None:
    switched = f"web1: {NEW} on green (was {OLD} on blue), host work 2.5 s (start 1.2, public 0.5)"
    assert host_line(build=build()) == (f"{switched}, build 14.3 s (install 8.1 s with uv)")
    reused = build(venv_reused=True, steps=[{"step": "venv", "seconds": 0.0}], seconds=3.0)
    assert host_line(build=reused) == f"{switched}, build 3.0 s (venv reused)"
    # No build in this run (rollback, same commit), or only its plan (check mode).
    assert host_line() == switched
    assert host_line(build=build(plan=["export"])) == switched


def test_the_report_holds_the_summary_and_each_hosts_switch_steps() -> None:
    hostvars = {
        "web1": {
            "release_state": {"commit": "bbbbbbbbcccccccc", "live": {"id": OLD}, "build": {}},
            "release_outcome": {"switch": report(), "target": NEW, "batch": ["web1"]},
            "djdeploy_run_started": 100.0,
            "release_secret_key": "never read",
        },
    }
    data = summary.release_report(
        hostvars, ["web1", "web2"], app="demo", action="release", url="https://x/", now=104.0
    )
    assert data["summary"][0].startswith(f"release of demo: {NEW}")
    web1 = data["hosts"]["web1"]
    assert (web1["commit"], web1["target"], web1["batch"]) == ("bbbbbbbbcccccccc", NEW, ["web1"])
    assert [s["step"] for s in web1["switch"]["steps"]] == ["start", "public"]
    assert data["hosts"]["web2"] == {
        "commit": "",
        "target": "",
        "batch": [],
        "started_epoch": 0.0,
        "build": {},
        "switch": {},
    }
    assert "never read" not in str(data)


def test_a_worker_only_host_is_shown_as_processes_only() -> None:
    switch = {**report(1.5), "web": False, "live_color": "", "old_color": ""}
    switch["steps"] = [{"step": "processes", "seconds": 1.0}, {"step": "commit", "seconds": 0.5}]
    hostvars = {
        "web1": {"release_outcome": {"switch": report(), "target": NEW, "batch": ["web1"]}},
        "db": {"release_outcome": {"switch": switch, "target": NEW, "batch": ["db"]}},
    }
    lines = summary.release_summary(
        hostvars, ["web1", "db"], app="demo", action="release", url="https://d/", now=1.0
    )
    assert lines[1] == "batches: web1 | db"
    assert lines[2].startswith(f"web1: {NEW} on green (was {OLD} on blue)")
    assert lines[3] == (
        f"db: {NEW}, processes only (was {OLD}), host work 1.5 s (processes 1.0, commit 0.5)"
    )
