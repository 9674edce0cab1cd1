"""The blue/green switch module (roles/release/library/djdeploy_switch.py) against a fake host.

The host is a temporary directory (releases, colors, links, the upstream file) and a fake
command runner that plays systemctl, nginx, curl, journalctl and pgrep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .loader import load

sw = load("roles/release/library/djdeploy_switch.py")

OLD = "20260101T000000Z-aaaaaaaa"
NEW = "20260102T000000Z-bbbbbbbb"
CHECK = ["curl", "--write-out", "%{http_code}", "https://demo.example.com/healthz"]


class FakeHost:
    """Plays the host's commands; each knob makes one thing fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.start_fails: str = ""
        self.socket_statuses: list[int | None] = [200]
        self.public_outputs: list[str] = ["200"]
        self.nginx_t_rc = 0
        self.draining = 0
        self.stop_rc = 0
        self.sleeps: list[float] = []
        self.now = 0.0
        self.upstream_at_reload: list[str] = []
        self.upstream_file: Path | None = None

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        self.now += 0.01
        if argv[:2] == ["systemctl", "start"] and self.start_fails and self.start_fails in argv[2]:
            return 1, "", "Job failed"
        if argv[:2] == ["systemctl", "stop"] and "green" not in " ".join(argv[2:]):
            return self.stop_rc, "", "boom" if self.stop_rc else ""
        if argv[:2] == ["systemctl", "reload"] and self.upstream_file is not None:
            self.upstream_at_reload.append(self.upstream_file.read_text())
        if argv[:2] == ["nginx", "-t"]:
            return self.nginx_t_rc, "", "nginx: [emerg] bad" if self.nginx_t_rc else ""
        if argv[0] == "curl":
            out = (
                self.public_outputs.pop(0)
                if len(self.public_outputs) > 1
                else self.public_outputs[0]
            )
            return 0, out, ""
        if argv[0] == "journalctl":
            return 0, "line 1\nTraceback: boom\n", ""
        if argv[0] == "pgrep":
            if self.draining > 0:
                self.draining -= 1
                return 0, "123\n", ""
            return 1, "", ""
        return 0, "", ""

    def http_get(self, socket_path: str, path: str, headers: dict[str, str], timeout: float) -> int:
        self.calls.append(["GET", socket_path, path, headers["Host"]])
        status = (
            self.socket_statuses.pop(0)
            if len(self.socket_statuses) > 1
            else self.socket_statuses[0]
        )
        if status is None:
            raise ConnectionRefusedError("refused")
        return status

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def commands(self, prefix: list[str]) -> list[list[str]]:
        return [c for c in self.calls if c[: len(prefix)] == prefix]


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    root = tmp_path / "srv/demo"
    for release in (OLD, NEW):
        (root / "releases" / release).mkdir(parents=True)
    (root / "colors").mkdir()
    (root / "colors/blue").symlink_to(root / "releases" / OLD)
    (root / "current").symlink_to(root / "releases" / OLD)
    (root / "live-color").write_text("blue\n")
    return root


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    path = tmp_path / "etc/nginx/djdeploy/demo/upstream.conf"
    path.parent.mkdir(parents=True)
    path.write_text(sw.upstream_text("demo_app", "/run/demo/gunicorn-blue.sock", "blue", "demo"))
    return path


def make(app_root: Path, upstream: Path, host: FakeHost, **overrides: Any) -> Any:
    host.upstream_file = upstream
    cfg = sw.Config(
        app="demo",
        app_root=app_root,
        release=overrides.pop("release", NEW),
        socket_dir=Path("/run/demo"),
        upstream_file=upstream,
        upstream_name="demo_app",
        health_host="demo.example.com",
        check_argv=CHECK,
        retries=overrides.pop("retries", 3),
        delay=1.0,
        drain_timeout=overrides.pop("drain_timeout", 5.0),
        host="web1",
        **overrides,
    )
    return sw.Switch(
        cfg,
        run=host.run,
        http_get=host.http_get,
        sleep=host.sleep,
        clock=host.clock,
        chown=lambda path, user, group: None,
    )


def target(link: Path) -> str:
    return link.readlink().name


def test_switch_moves_traffic_to_the_idle_color_and_retires_the_old(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    report = make(app_root, upstream, host).execute()

    assert (report.live_color, report.old_color, report.previous_release) == ("green", "blue", OLD)
    assert report.changed
    assert target(app_root / "colors/green") == NEW
    assert target(app_root / "current") == NEW
    assert target(app_root / "previous") == OLD
    assert (app_root / "live-color").read_text() == "green\n"
    assert "unix:/run/demo/gunicorn-green.sock" in upstream.read_text()
    assert "upstream demo_app {" in upstream.read_text()
    # The order that keeps requests flowing: start, check on the socket, move nginx, check
    # through nginx, only then stop the old color.
    starts = host.commands(["systemctl", "start"])
    assert [c[2] for c in starts] == ["demo@green.socket", "demo@green.service"]
    order = [" ".join(c) for c in host.calls]
    first = {
        name: next(i for i, c in enumerate(order) if c.startswith(name))
        for name in (
            "systemctl start demo@green.service",
            "GET /run/demo/gunicorn-green.sock",
            "nginx -t",
            "systemctl reload nginx",
            "curl",
            "systemctl enable demo@green.socket",
            "pgrep",
            "systemctl stop demo@blue.service demo@blue.socket",
            "systemctl disable demo@blue.socket",
        )
    }
    assert list(first.values()) == sorted(first.values())
    assert [s["step"] for s in report.steps] == [
        "prepare",
        "start",
        "health",
        "upstream",
        "public",
        "commit",
        "drain",
        "retire",
    ]
    assert report.seconds >= sum(s["seconds"] for s in report.steps) - 0.001


def test_the_idle_color_is_blue_when_green_serves(app_root: Path, upstream: Path) -> None:
    (app_root / "live-color").write_text("green\n")
    host = FakeHost()
    report = make(app_root, upstream, host).execute()
    assert (report.live_color, report.old_color) == ("blue", "green")
    assert "gunicorn-blue.sock" in upstream.read_text()


def test_first_release_has_no_old_color_to_retire(app_root: Path, upstream: Path) -> None:
    (app_root / "live-color").unlink()
    (app_root / "current").unlink()
    host = FakeHost()
    report = make(app_root, upstream, host).execute()
    assert (report.live_color, report.old_color, report.previous_release) == ("blue", "", "")
    assert not (app_root / "previous").exists()
    assert not host.commands(["pgrep"])
    assert [s["step"] for s in report.steps][-1] == "commit"


def test_same_release_switch_restarts_on_the_other_color(app_root: Path, upstream: Path) -> None:
    """A config change re-serves the live release on the idle color; previous stays as is."""
    host = FakeHost()
    report = make(app_root, upstream, host, release=OLD).execute()
    assert report.live_color == "green"
    assert target(app_root / "current") == OLD
    assert not (app_root / "previous").exists()


def test_a_release_that_does_not_boot_is_stopped_and_traffic_stays(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.start_fails = "demo@green.service"
    switch = make(app_root, upstream, host)
    with pytest.raises(sw.SwitchError) as failed:
        switch.execute()
    msg = failed.value.msg
    assert f"release: {NEW} did not start or answer /healthz with 200 on web1" in msg
    assert f"traffic stays on the live release {OLD}" in msg
    assert "Traceback: boom" in msg and failed.value.log
    assert upstream.read_text() == before
    assert target(app_root / "current") == OLD
    assert (app_root / "live-color").read_text() == "blue\n"
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])
    assert not host.commands(["systemctl", "reload"])
    assert not host.commands(["systemctl", "stop", "demo@blue.service"])


def test_health_is_retried_then_gives_up(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    host.socket_statuses = [None, 500, 503]
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host, retries=3).execute()
    assert "(last: status 503)" in failed.value.msg
    assert len(host.commands(["GET"])) == 3
    assert host.sleeps == [1.0, 1.0]


def test_health_succeeds_after_a_refused_connection(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    host.socket_statuses = [None, 200]
    report = make(app_root, upstream, host).execute()
    assert report.live_color == "green"


def test_nginx_refusing_the_upstream_restores_it(app_root: Path, upstream: Path) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.nginx_t_rc = 1
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    assert "nginx refused the upstream" in failed.value.msg and "[emerg] bad" in failed.value.msg
    assert upstream.read_text() == before
    assert host.upstream_at_reload == [before]
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])
    assert target(app_root / "current") == OLD


def test_failing_through_nginx_points_nginx_back_and_stops_the_new(
    app_root: Path, upstream: Path
) -> None:
    before = upstream.read_text()
    host = FakeHost()
    host.public_outputs = ["502"]
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    msg = failed.value.msg
    assert f"{NEW} answered on its socket but not through nginx on web1 (last: 502)" in msg
    assert "nginx points at the live release again" in msg
    assert upstream.read_text() == before
    # nginx was reloaded twice: onto the new color, then back onto the live one.
    assert len(host.upstream_at_reload) == 2 and host.upstream_at_reload[-1] == before
    assert "gunicorn-green.sock" in host.upstream_at_reload[0]
    assert (app_root / "live-color").read_text() == "blue\n"
    assert not host.commands(["systemctl", "stop", "demo@blue.service"])
    assert len(host.commands(["curl"])) == 3


def test_a_missing_release_changes_nothing(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host, release="nope").execute()
    assert "does not exist" in failed.value.msg
    assert host.calls == []


def test_an_io_error_of_our_own_reverts(app_root: Path, upstream: Path) -> None:
    (app_root / "colors/blue").unlink()
    (app_root / "colors").rmdir()
    (app_root / "colors").write_text("not a directory")
    host = FakeHost()
    with pytest.raises(sw.SwitchError) as failed:
        make(app_root, upstream, host).execute()
    assert "traffic stays on the live release" in failed.value.msg
    assert host.commands(["systemctl", "stop", "demo@green.service", "demo@green.socket"])


def test_drain_waits_for_old_workers_but_is_bounded(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    host.draining = 3
    make(app_root, upstream, host).execute()
    assert len(host.commands(["pgrep"])) == 4

    host = FakeHost()
    host.draining = 10_000
    (app_root / "live-color").write_text("blue\n")
    report = make(app_root, upstream, host, drain_timeout=2.0).execute()
    drain = next(s for s in report.steps if s["step"] == "drain")
    assert 2.0 <= drain["seconds"] < 3.0


def test_failing_to_stop_the_old_color_says_the_release_is_live(
    app_root: Path, upstream: Path
) -> None:
    host = FakeHost()
    host.stop_rc = 1
    switch = make(app_root, upstream, host)
    with pytest.raises(sw.SwitchError) as failed:
        switch.execute()
    assert f"{NEW} is live on web1, but stopping the old color blue failed" in failed.value.msg
    assert switch.report.live_color == "green"
    assert target(app_root / "current") == NEW


def test_check_mode_plans_without_touching_the_host(app_root: Path, upstream: Path) -> None:
    host = FakeHost()
    plan = make(app_root, upstream, host).plan()
    assert plan["live_color"] == "green" and plan["old_color"] == "blue" and plan["changed"]
    assert host.calls == []
    assert target(app_root / "current") == OLD


def test_upstream_text_names_one_server() -> None:
    text = sw.upstream_text("shop_app", "/run/shop/gunicorn-green.sock", "green", "shop")
    assert text.count("server ") == 1
    assert "upstream shop_app {" in text and "fail_timeout=0" in text
