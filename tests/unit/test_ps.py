"""djdeploy_ps_lib: what an app runs on one host, from fake systemctl output and a fake socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .loader import load

ps = load("roles/release/module_utils/djdeploy_ps_lib.py")

SHOW = {
    "demo@blue.socket": {"ActiveState": "active", "SubState": "listening"},
    "demo@blue.service": {
        "ActiveState": "active",
        "SubState": "running",
        "ActiveEnterTimestamp": "Wed 2026-12-02 10:00:00 UTC",
    },
    "demo@green.socket": {"ActiveState": "inactive", "SubState": "dead"},
    "demo@green.service": {"ActiveState": "inactive", "SubState": "dead"},
    "demo-worker@1.service": {"ActiveState": "active", "SubState": "running", "NRestarts": "0"},
    "demo-worker@2.service": {
        "ActiveState": "activating",
        "SubState": "auto-restart",
        "NRestarts": "3",
    },
    "demo-tick.timer": {
        "ActiveState": "active",
        "SubState": "waiting",
        "NextElapseUSecRealtime": "Thu 2026-12-03 03:17:00 UTC",
        "LastTriggerUSec": "n/a",
    },
}


class FakeSystemctl:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[1] == "list-units":
            pattern = argv[-1]
            name = pattern.partition("@")[0]
            units = [u for u in SHOW if u.startswith(name + "@")]
            return 0, "".join(f"{u} loaded active running x\n" for u in units), ""
        assert argv[1] == "show"
        blocks = []
        for unit in argv[3:]:
            values = SHOW.get(unit, {"LoadState": "not-found", "ActiveState": "inactive"})
            blocks.append("\n".join(f"{k}={v}" for k, v in {"Id": unit, **values}.items()))
        return 0, "\n\n".join(blocks) + "\n", ""


def config(tmp_path: Path) -> Any:
    root = tmp_path / "srv/demo"
    (root / "releases/R2").mkdir(parents=True)
    (root / "processes").symlink_to(root / "releases/R2")
    (root / "live-color").write_text("blue\n")
    return ps.PsConfig(
        app="demo",
        app_root=root,
        socket_dir=tmp_path / "run/demo",
        socket_name="gunicorn-{color}.sock",
        health_path="/healthz",
        health_host="demo.test",
    )


def test_the_status_of_a_host(tmp_path: Path) -> None:
    fake = FakeSystemctl()
    asked: list[tuple[str, str, dict[str, str]]] = []

    def http_get(sock: str, path: str, headers: dict[str, str], timeout: float) -> int:
        asked.append((sock, path, headers))
        return 200

    cfg = config(tmp_path)
    procs = {"worker": Path("/etc/systemd/system/demo-worker@.service")}
    scheds = {"tick": Path("/etc/systemd/system/demo-tick.timer")}
    got = ps.status(cfg, {"id": "R2", "commit": "abc"}, procs, scheds, fake.run, http_get)

    assert got["release"] == "R2"
    assert got["live_color"] == "blue"
    assert got["health"] == "200"
    assert asked == [
        (
            f"{tmp_path}/run/demo/gunicorn-blue.sock",
            "/healthz",
            {"Host": "demo.test", "X-Forwarded-Proto": "https"},
        )
    ]
    assert [(w["color"], w["live"], w["service"]) for w in got["web"]] == [
        ("blue", True, "active/running"),
        ("green", False, "inactive/dead"),
    ]
    assert [(p["unit"], p["state"], p["restarts"], p["release"]) for p in got["processes"]] == [
        ("demo-worker@1.service", "active/running", 0, "R2"),
        ("demo-worker@2.service", "activating/auto-restart", 3, "R2"),
    ]
    (timer,) = got["timers"]
    assert (timer["timer"], timer["schedule"]) == ("demo-tick.timer", "tick")
    assert timer["next"] == "Thu 2026-12-03 03:17:00 UTC"
    assert timer["state"] == "active/waiting"
    assert got["timers"][0]["last"] == ""
    assert got["lines"][0] == "release R2, live color blue, health 200"
    assert "* web.blue: active/running (socket active/listening) since" in got["lines"][1]
    assert "  demo-worker@2.service: activating/auto-restart on R2, 3 restart(s)" in got["lines"]
    assert any(
        line.startswith("  demo-tick.timer: ") and "last never" in line for line in got["lines"]
    )
    # One systemctl show for the four web units, one per kind after that.
    shows = [c for c in fake.calls if c[1] == "show"]
    assert len(shows) == 3


def test_nothing_live_and_an_unreachable_socket(tmp_path: Path) -> None:
    fake = FakeSystemctl()
    cfg = config(tmp_path)

    def refused(sock: str, path: str, headers: dict[str, str], timeout: float) -> int:
        raise OSError("connection refused")

    got = ps.status(cfg, {}, {}, {}, fake.run, refused)
    assert got["release"] == ""
    assert got["health"] == "unreachable: connection refused"
    assert got["processes"] == [] and got["timers"] == []
    assert (
        got["lines"][0]
        == "release (none live), live color blue, health unreachable: connection refused"
    )
    (cfg.app_root / "live-color").unlink()
    assert ps.status(cfg, {}, {}, {}, fake.run, refused)["health"] == "no live color"


def test_a_unit_systemd_does_not_know_is_absent() -> None:
    fake = FakeSystemctl()
    shown = ps.show(fake.run, ["demo-gone@1.service"], ps.UNIT_PROPERTIES)
    assert ps._state(shown["demo-gone@1.service"]) == "absent"


def test_a_worker_only_host_shows_its_processes_only(tmp_path: Path) -> None:
    fake = FakeSystemctl()
    cfg = config(tmp_path)
    cfg.web = False
    (cfg.app_root / "live-color").unlink()

    def never(sock: str, path: str, headers: dict[str, str], timeout: float) -> int:
        raise AssertionError("a worker-only host has no web tier to ask")

    procs = {"worker": Path("/etc/systemd/system/demo-worker@.service")}
    got = ps.status(cfg, {"id": "R2", "commit": "abc"}, procs, {}, fake.run, never)
    assert (got["live_color"], got["health"], got["web"]) == ("", "processes only", [])
    assert got["lines"][0] == "release R2, processes only (no web tier on this host)"
    assert "  demo-worker@1.service: active/running on R2" in got["lines"]
    assert not any("web." in line for line in got["lines"])
    # No systemctl show of the web units: the processes' only.
    assert not any("demo@" in " ".join(c) for c in fake.calls)
