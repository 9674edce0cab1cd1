"""Processes besides web and schedules: the inventory filters, the units, the switch's moves.

playbooks/filter_plugins/djdeploy_processes.py checks app_processes and app_schedules and says
what a host runs; roles/release/module_utils/djdeploy_processes_lib.py writes the units and
moves the processes with a release (a fake systemctl plays systemd on a temporary unit
directory); roles/release/library/djdeploy_switch.py calls it between the public check and
the commit.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from .loader import load

flt = load("playbooks/filter_plugins/djdeploy_processes.py")
lib = load("roles/release/module_utils/djdeploy_processes_lib.py")

GROUPS = {"web": ["web1", "web2"], "worker": ["web2"], "db": ["db1"], "empty": []}
OLD = "20260101T000000Z-aaaaaaaa"
NEW = "20260102T000000Z-bbbbbbbb"


# -- the inventory filters -------------------------------------------------------------------


def test_processes_per_host_with_defaults_groups_and_a_singleton() -> None:
    procs = {
        "worker": {"command": "celery -A proj worker", "instances": 2, "stop_timeout": 60},
        "beat": {"command": "celery -A proj beat", "singleton": True},
        "mailer": {"command": "python manage.py mailer", "group": "worker"},
    }
    web1 = {p["name"]: p for p in flt.djdeploy_host_processes(procs, GROUPS, "web1")}
    web2 = {p["name"]: p for p in flt.djdeploy_host_processes(procs, GROUPS, "web2")}
    assert [web1[n]["instances"] for n in ("beat", "mailer", "worker")] == [1, 0, 2]
    assert [web2[n]["instances"] for n in ("beat", "mailer", "worker")] == [0, 1, 2]
    assert web1["worker"]["stop_timeout"] == 60 and web1["beat"]["stop_timeout"] == 30
    assert web1["mailer"]["group"] == "worker"
    # Sorted by name: every host lists the same processes in the same order.
    assert list(web1) == ["beat", "mailer", "worker"]
    assert flt.djdeploy_host_processes({}, GROUPS, "web1") == []
    assert flt.djdeploy_host_processes(None, GROUPS, "web1") == []


@pytest.mark.parametrize(
    ("procs", "message"),
    [
        ({"web": {"command": "x"}}, "app_processes: the name web is the web process itself"),
        (
            {"beat": {"command": "x", "singleton": True, "instances": 2}},
            "app_processes: beat is a singleton (exactly one instance across all hosts):"
            " instances must be 1 (got 2)",
        ),
        (
            {"w": {"command": "x", "group": "empty"}},
            "app_processes: w.group 'empty' has no hosts in the inventory",
        ),
        (
            {"w": {"command": "x", "group": "nosuch"}},
            "app_processes: w.group 'nosuch' has no hosts",
        ),
        ({"w": {"command": "x", "replicas": 2}}, "app_processes: w has unknown key(s) replicas"),
        ({"w": {"command": ""}}, "app_processes: w.command must be a non-empty string"),
        ({"w": {}}, "app_processes: w.command must be a non-empty string (got None)"),
        ({"w": {"command": "a\nb"}}, "w.command must be one line"),
        ({"w": {"command": "x", "instances": "2"}}, "w.instances must be a whole number >= 1"),
        ({"w": {"command": "x", "instances": 0}}, "w.instances must be a whole number >= 1"),
        ({"w": {"command": "x", "instances": True}}, "w.instances must be a whole number"),
        ({"w": {"command": "x", "stop_timeout": 0}}, "w.stop_timeout must be a whole number"),
        ({"w": {"command": "x", "singleton": "yes"}}, "w.singleton must be true or false"),
        ({"W!": {"command": "x"}}, "app_processes: the name 'W!' must match"),
        ({"w": "celery worker"}, "app_processes: w must be a mapping (got str)"),
        (["worker"], "app_processes: must be a mapping of names to settings (got list)"),
    ],
)
def test_bad_processes_fail_naming_the_variable(procs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^app_processes: ") as failed:
        flt.djdeploy_host_processes(procs, GROUPS, "web1")
    assert message in str(failed.value)


def test_a_group_outside_web_runs_its_processes_on_worker_only_hosts() -> None:
    groups = {"web": ["web1", "web2"], "worker": ["db1", "web2"], "db": ["db1"]}
    procs = {
        "worker": {"command": "celery -A proj worker"},
        "offload": {"command": "celery -A proj worker -Q offload", "group": "worker"},
        "single": {"command": "x", "group": "worker", "singleton": True},
    }

    def counts(host: str) -> dict[str, int]:
        found = flt.djdeploy_host_processes(procs, groups, host)
        return {p["name"]: p["instances"] for p in found}

    # The group's hosts run it (a singleton: its first host), the web processes stay on web.
    assert counts("db1") == {"offload": 1, "single": 1, "worker": 0}
    assert counts("web1") == {"offload": 0, "single": 0, "worker": 1}
    assert counts("web2") == {"offload": 1, "single": 0, "worker": 1}
    # The app hosts: web first, then the worker-only ones, each once.
    assert flt.djdeploy_app_hosts(procs, groups) == ["web1", "web2", "db1"]
    assert flt.djdeploy_app_hosts({}, groups) == ["web1", "web2"]
    assert flt.djdeploy_app_hosts(None, {"web": ["w"]}) == ["w"]
    # An empty group is refused before anything changes, naming the variable.
    with pytest.raises(ValueError, match=r"^app_processes: offload.group 'worker' has no hosts"):
        flt.djdeploy_host_processes(procs, {"web": ["web1"], "worker": []}, "web1")


def test_batches_put_the_worker_only_hosts_after_every_web_host() -> None:
    assert flt.djdeploy_batches(1, 2, 0) == [1, 1]
    assert flt.djdeploy_batches(1, 2, 1) == [1, 1, 1]
    assert flt.djdeploy_batches(2, 3, 3) == [2, 1, 2, 1]
    assert flt.djdeploy_batches("2", 2, 1) == [2, 1]
    assert flt.djdeploy_batches(5, 2, 1) == [2, 1]
    assert flt.djdeploy_batches(1, 0, 0) == [1]
    # A percentage stays as it is without worker-only hosts, and is refused with them.
    assert flt.djdeploy_batches("50%", 4, 0) == "50%"
    with pytest.raises(ValueError, match=r"^release_serial: must be a whole number >= 1 with"):
        flt.djdeploy_batches("50%", 4, 1)
    with pytest.raises(ValueError, match=r"^release_serial: must be a whole number >= 1"):
        flt.djdeploy_batches(0, 2, 0)


def test_app_scale_overrides_instances() -> None:
    procs = {
        "worker": {"command": "celery -A proj worker", "instances": 2},
        "beat": {"command": "celery -A proj beat", "singleton": True},
        "mailer": {"command": "python manage.py mailer", "group": "worker"},
    }

    def counts(host: str, scale: Any) -> dict[str, int]:
        found = flt.djdeploy_host_processes(procs, GROUPS, host, scale=scale)
        return {p["name"]: p["instances"] for p in found}

    assert counts("web1", {"worker": 5, "beat": 0}) == {"beat": 0, "mailer": 0, "worker": 5}
    assert counts("web2", {"worker": 5, "mailer": 3}) == {"beat": 0, "mailer": 3, "worker": 5}
    assert counts("web1", {}) == counts("web1", None) == {"beat": 1, "mailer": 0, "worker": 2}


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ({"beat": 2}, "app_scale: beat is a singleton (exactly one instance across all hosts):"),
        ({"celery": 1}, "app_scale: 'celery' is not a process of app_processes (known: beat, w)"),
        ({"w": -1}, "app_scale: w.instances must be a whole number >= 0"),
        ({"w": "3"}, "app_scale: w.instances must be a whole number >= 0"),
        ([1], "app_scale: must be a mapping of process names to instances"),
    ],
)
def test_bad_scale_fails_naming_app_scale(scale: Any, message: str) -> None:
    procs = {"w": {"command": "x"}, "beat": {"command": "y", "singleton": True}}
    with pytest.raises(ValueError) as failed:
        flt.djdeploy_host_processes(procs, GROUPS, "web1", scale=scale)
    assert message in str(failed.value)


def test_schedules_run_on_the_first_web_host() -> None:
    scheds = {"tick": {"command": "python manage.py tick", "on_calendar": " *:0/5 "}}
    (first,) = flt.djdeploy_host_schedules(scheds, GROUPS, "web1")
    (second,) = flt.djdeploy_host_schedules(scheds, GROUPS, "web2")
    assert first == {
        "name": "tick",
        "command": "python manage.py tick",
        "on_calendar": "*:0/5",
        "randomized_delay": 0,
        "here": True,
    }
    assert second["here"] is False


@pytest.mark.parametrize(
    ("scheds", "message"),
    [
        ({"t": {"command": "x"}}, "app_schedules: t.on_calendar must be a systemd calendar"),
        ({"t": {"command": "x", "on_calendar": 5}}, "t.on_calendar must be a systemd calendar"),
        ({"t": {"on_calendar": "daily"}}, "app_schedules: t.command must be a non-empty"),
        (
            {"t": {"command": "x", "on_calendar": "daily", "randomized_delay": -1}},
            "t.randomized_delay must be a whole number >= 0",
        ),
        ({"t": {"command": "x", "on_calendar": "daily", "every": 1}}, "unknown key(s) every"),
    ],
)
def test_bad_schedules_fail_naming_the_variable(scheds: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^app_schedules: ") as failed:
        flt.djdeploy_host_schedules(scheds, GROUPS, "web1")
    assert message in str(failed.value)


# -- the units ---------------------------------------------------------------------------------


def settings(tmp_path: Path) -> Any:
    unit_dir = tmp_path / "etc/systemd/system"
    (unit_dir / lib.WANTS).mkdir(parents=True, exist_ok=True)
    return lib.Settings(
        app="demo",
        app_root=tmp_path / "srv/demo",
        manage="/usr/local/bin/demo-manage",
        user="demo",
        group="demo",
        read_write_paths=["/srv/demo/shared/media"],
        unit_dir=unit_dir,
        settle=3.0,
    )


def test_a_process_unit_runs_the_command_sandboxed_as_the_runtime_user(tmp_path: Path) -> None:
    proc = lib.Process("worker", 'celery -A proj worker -Q "a b" --x=100%', 2, 45)
    text = lib.process_unit(settings(tmp_path), proc)
    assert text.startswith("# Managed by djdeploy: process worker of app demo ")
    lines = text.splitlines()
    for line in (
        "Type=exec",
        "User=demo",
        "Group=demo",
        f"Environment=DJDEPLOY_RELEASE_DIR={tmp_path}/srv/demo/processes",
        'Environment="DJDEPLOY_COMMAND=celery -A proj worker -Q \\"a b\\" --x=100%%"',
        "ExecStart=/usr/local/bin/demo-manage",
        "KillMode=mixed",
        "TimeoutStopSec=45",
        "SyslogIdentifier=demo-worker",
        "ReadWritePaths=-/srv/demo/shared/media",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    assert proc.units("demo") == ["demo-worker@1.service", "demo-worker@2.service"]


def test_a_schedule_is_a_oneshot_service_on_the_live_release_and_a_timer(tmp_path: Path) -> None:
    sched = lib.Schedule("tick", "python manage.py tick", "*:0/5", 30)
    service, timer = lib.schedule_units(settings(tmp_path), sched)
    assert "Type=oneshot" in service.splitlines()
    assert f"Environment=DJDEPLOY_RELEASE_DIR={tmp_path}/srv/demo/current" in service
    assert "SyslogIdentifier=demo-tick" in service
    assert "OnCalendar=*:0/5" in timer.splitlines()
    assert "RandomizedDelaySec=30" in timer.splitlines()
    assert "WantedBy=timers.target" in timer.splitlines()
    _, plain = lib.schedule_units(settings(tmp_path), lib.Schedule("t", "x", "daily"))
    assert "RandomizedDelaySec" not in plain


class FakeSystemd:
    """systemctl and journalctl on a unit directory: enable/disable make the wants links,
    start/stop keep the set of active units; processes in `broken` never come up."""

    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir = unit_dir
        self.active: set[str] = set()
        self.broken: set[str] = set()
        self.calls: list[list[str]] = []
        self.release_at_start: dict[str, str] = {}
        self.link: Path | None = None

    def _template(self, unit: str) -> Path:
        if "@" in unit:
            return self.unit_dir / (unit.partition("@")[0] + "@.service")
        return self.unit_dir / unit

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        if argv[0] == "journalctl":
            return 0, "Unknown command: 'nosuch'\n", ""
        verb, args = argv[1], [a for a in argv[2:] if not a.startswith("--")]
        wants = self.unit_dir / lib.WANTS
        if verb in ("enable", "disable"):
            for unit in args:
                link = wants / unit
                if verb == "enable":
                    link.unlink(missing_ok=True)
                    link.symlink_to(self._template(unit))
                else:
                    link.unlink(missing_ok=True)
                if "--now" in argv:
                    (self.active.add if verb == "enable" else self.active.discard)(unit)
        elif verb in ("start", "restart"):
            for unit in args:
                if not self._template(unit).exists():
                    return 5, "", f"Unit {unit} not found."
                self.active.add(unit)
                if self.link is not None and self.link.is_symlink():
                    self.release_at_start[unit] = self.link.readlink().name
        elif verb == "stop":
            for pattern in args:
                self.active = {u for u in self.active if not fnmatch.fnmatch(u, pattern)}
        elif verb == "show":
            unit = args[-1]
            name = unit.partition("@")[0].removeprefix("demo-")
            if unit in self.active and name in self.broken:
                return 0, "ActiveState=activating\nSubState=auto-restart\nNRestarts=1\n", ""
            state = "active" if unit in self.active else "inactive"
            return 0, f"ActiveState={state}\nSubState=running\nNRestarts=0\n", ""
        elif verb in ("is-enabled", "is-active"):
            unit = args[-1]
            ok = (wants / unit).is_symlink() if verb == "is-enabled" else unit in self.active
            return (0 if ok else 1), "", ""
        return 0, "", ""

    def verbs(self, verb: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == "systemctl" and c[1] == verb]


def replace_link(link: Path, target: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def workload(
    tmp_path: Path, fake: FakeSystemd, procs: list[Any], scheds: list[Any] | None = None
) -> Any:
    s = settings(tmp_path)
    for release in (OLD, NEW):
        (s.app_root / "releases" / release).mkdir(parents=True, exist_ok=True)
    fake.link = s.app_root / "processes"
    return lib.Workload(s, procs, scheds or [], fake.run, lambda _s: None, replace_link)


def test_a_switch_stops_the_old_processes_then_starts_the_new_release(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    procs = [lib.Process("worker", "celery worker", 2, 60), lib.Process("beat", "celery beat")]
    first = workload(tmp_path, fake, procs)
    first.switch(first.s.app_root / "releases" / OLD)
    assert fake.active == {"demo-worker@1.service", "demo-worker@2.service", "demo-beat@1.service"}
    assert set(fake.release_at_start.values()) == {OLD}
    fake.calls.clear()

    again = workload(tmp_path, fake, procs)
    again.switch(again.s.app_root / "releases" / NEW)
    # Nothing to rewrite: no daemon-reload; the old instances stop (blocking, every one of the
    # app's process templates), before the link moves and the new ones start.
    assert not fake.verbs("daemon-reload")
    stop, start = fake.verbs("stop")[0], fake.verbs("start")[0]
    assert stop == ["systemctl", "stop", "demo-beat@*.service", "demo-worker@*.service"]
    assert fake.calls.index(stop) < fake.calls.index(start)
    assert fake.release_at_start == {
        "demo-worker@1.service": NEW,
        "demo-worker@2.service": NEW,
        "demo-beat@1.service": NEW,
    }
    assert (again.s.app_root / "processes").readlink().name == NEW


def test_a_process_that_does_not_start_reverts_to_the_old_release(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    old_procs = [lib.Process("worker", "python manage.py heartbeat", 1)]
    first = workload(tmp_path, fake, old_procs)
    first.switch(first.s.app_root / "releases" / OLD)
    template = first.s.unit_dir / "demo-worker@.service"
    old_text = template.read_text()

    fake.broken = {"worker"}
    procs = [lib.Process("worker", "python manage.py nosuch", 2)]
    moving = workload(tmp_path, fake, procs)
    with pytest.raises(lib.UnitError) as failed:
        moving.switch(moving.s.app_root / "releases" / NEW, " on web1")
    msg = failed.value.msg
    assert msg.startswith(
        f"release: the process worker (app_processes; unit demo-worker@1.service) of {NEW}"
        " did not start on web1 (state activating/auto-restart, 1 restart(s) within 0.5 s of the"
        " 3 s it must keep running)."
    )
    assert "Unknown command: 'nosuch'" in msg
    fake.broken = set()
    moving.revert()
    # The old unit, the old link, the old instance running again; the new one not enabled.
    assert template.read_text() == old_text
    assert (moving.s.app_root / "processes").readlink().name == OLD
    assert fake.active == {"demo-worker@1.service"}
    assert fake.release_at_start["demo-worker@1.service"] == OLD
    assert not (moving.s.unit_dir / lib.WANTS / "demo-worker@2.service").exists()


def test_finish_drops_what_is_no_longer_wanted_and_writes_the_schedules(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    first = workload(tmp_path, fake, [lib.Process("worker", "w", 2), lib.Process("old", "o")])
    first.switch(first.s.app_root / "releases" / OLD)
    first.finish()
    sched = lib.Schedule("tick", "python manage.py tick", "*:0/5")
    fewer = workload(tmp_path, fake, [lib.Process("worker", "w", 1)], [sched])
    fewer.switch(fewer.s.app_root / "releases" / NEW)
    assert fewer.finish() is True
    unit_dir = fewer.s.unit_dir
    assert fake.active == {"demo-worker@1.service", "demo-tick.timer"}
    assert not (unit_dir / lib.WANTS / "demo-worker@2.service").exists()
    assert not (unit_dir / "demo-old@.service").exists()
    assert (unit_dir / "demo-tick.timer").exists() and (unit_dir / "demo-tick.service").exists()
    assert (unit_dir / lib.WANTS / "demo-tick.timer").is_symlink()
    # Again with nothing changed: nothing to do.
    fake.calls.clear()
    assert workload(tmp_path, fake, [lib.Process("worker", "w", 1)], [sched]).finish() is False
    assert not fake.verbs("restart") and not fake.verbs("daemon-reload")
    # A schedule that moved to another host is removed here.
    elsewhere = lib.Schedule("tick", "python manage.py tick", "*:0/5", here=False)
    assert workload(tmp_path, fake, [lib.Process("worker", "w", 1)], [elsewhere]).finish()
    assert not (unit_dir / "demo-tick.timer").exists()


def test_reconcile_starts_what_is_down_and_is_quiet_when_all_runs(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    procs = [lib.Process("worker", "w", 1)]
    w = workload(tmp_path, fake, procs)
    current = w.s.app_root / "releases" / OLD
    assert w.reconcile(current) is True
    assert fake.active == {"demo-worker@1.service"}
    assert (w.s.app_root / "processes").readlink() == current
    fake.calls.clear()
    assert workload(tmp_path, fake, procs).reconcile(current) is False
    assert not fake.verbs("restart") and not fake.verbs("enable")
    # A changed command restarts the instance.
    changed = workload(tmp_path, fake, [lib.Process("worker", "w2", 1)])
    assert changed.reconcile(current) is True
    assert fake.verbs("restart") == [["systemctl", "restart", "demo-worker@1.service"]]


def test_another_apps_unit_of_the_same_name_is_never_overwritten(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    w = workload(tmp_path, fake, [lib.Process("worker", "w", 1)])
    (w.s.unit_dir / "demo-worker@.service").write_text("# the web units of app demo-worker\n")
    with pytest.raises(lib.UnitError, match="is not a unit djdeploy wrote for demo"):
        w.switch(w.s.app_root / "releases" / NEW)
    assert fake.active == set()


# -- in the switch -----------------------------------------------------------------------------


def test_the_switch_moves_processes_after_the_public_check_and_reverts_on_failure(
    tmp_path: Path,
) -> None:
    from . import test_switch_module as tsm

    root = tsm.make_app_root(tmp_path, OLD, NEW)
    upstream = tmp_path / "upstream.conf"
    upstream.write_text(
        tsm.sw.upstream_text("demo_app", "/run/demo/gunicorn-blue.sock", "blue", "demo")
    )
    before = upstream.read_text()

    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    fake.broken = {"worker"}
    host = tsm.FakeHost()

    def run(argv: list[str]) -> tuple[int, str, str]:
        host.calls.append(list(argv))
        if "demo-" in " ".join(argv) or argv[1:2] == ["daemon-reload"]:
            return fake.run(argv)
        return host.run(argv)

    switch = tsm.make(root, upstream, host)
    switch.run = run
    switch.workload = workload(tmp_path, fake, [lib.Process("worker", "nosuch", 1)])
    switch.workload.run = run
    switch.workload.units.run = run
    with pytest.raises(tsm.sw.SwitchError) as failed:
        switch.execute()
    msg = failed.value.msg
    assert "the process worker (app_processes; unit demo-worker@1.service)" in msg
    assert f"the processes and traffic stay on the live release {OLD}" in msg
    # The public check passed before the processes moved; then everything was put back.
    assert [s["step"] for s in switch.report.steps][-1] == "processes"
    assert upstream.read_text() == before
    assert (root / "current").readlink().name == OLD
    assert ["systemctl", "stop", "demo@green.service", "demo@green.socket"] in host.calls


def test_the_settle_window_is_polled_and_ends_at_the_first_failure(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    procs = [lib.Process("worker", "celery worker", 1)]
    slept: list[float] = []
    healthy = workload(tmp_path, fake, procs)
    healthy.sleep = slept.append
    healthy.switch(healthy.s.app_root / "releases" / OLD)
    # The whole window (3 s) in half-second looks, every look at every unit.
    assert slept == [0.5] * 6
    assert len(fake.verbs("show")) == 6

    slept.clear()
    looks = 0

    def breaks_on_the_third_look(step: float) -> None:
        nonlocal looks
        slept.append(step)
        looks += 1
        if looks == 3:
            fake.broken = {"worker"}

    failing = workload(tmp_path, fake, procs)
    failing.sleep = breaks_on_the_third_look
    with pytest.raises(lib.UnitError) as failed:
        failing.switch(failing.s.app_root / "releases" / NEW)
    assert slept == [0.5] * 3
    assert "restart(s) within 1.5 s of the 3 s it must keep running" in failed.value.msg


def worker_only_host(tmp_path: Path) -> tuple[Path, FakeSystemd, Any, Any]:
    """An app tree with a live release and no color (a worker-only host), the fake systemd, and
    a command runner that records every call on the fake host before systemd answers it."""
    from . import test_switch_module as tsm

    root = tsm.make_app_root(tmp_path, OLD, NEW)
    (root / "live-color").unlink()
    fake = FakeSystemd(tmp_path / "etc/systemd/system")
    host = tsm.FakeHost()

    def run(argv: list[str]) -> tuple[int, str, str]:
        host.calls.append(list(argv))
        return fake.run(argv)

    return root, fake, host, run


def test_a_worker_only_switch_moves_the_processes_and_commits_without_a_color(
    tmp_path: Path,
) -> None:
    from . import test_switch_module as tsm

    root, fake, host, run = worker_only_host(tmp_path)
    first = workload(tmp_path, fake, [lib.Process("offload", "celery worker -Q offload", 1)])
    first.switch(root / "releases" / OLD)
    switch = tsm.make(root, tmp_path / "no-upstream.conf", host, web=False, keep=2)
    switch.run = run
    switch.workload = workload(tmp_path, fake, [lib.Process("offload", "celery worker -Q x", 1)])
    switch.workload.run = switch.workload.units.run = run
    report = switch.execute()
    # The processes only: no color, no nginx, no curl, no socket health check.
    assert [s["step"] for s in report.steps] == ["processes", "commit", "schedules", "prune"]
    assert (report.live_color, report.old_color, report.previous_release) == ("", "", OLD)
    assert report.changed and report.as_dict()["web"] is False
    assert (root / "current").readlink().name == NEW
    assert (root / "previous").readlink().name == OLD
    assert (root / "processes").readlink().name == NEW
    assert not (root / "live-color").exists()
    assert fake.active == {"demo-offload@1.service"}
    assert fake.release_at_start["demo-offload@1.service"] == NEW
    commands = [c[0] for c in host.calls] + [c[1] for c in host.calls if c[0] == "systemctl"]
    assert "nginx" not in commands and "curl" not in commands and "reload" not in commands
    assert not any("demo@" in " ".join(c) for c in host.calls)
    assert not any(c[0] == "GET" for c in host.calls)


def test_a_worker_only_switch_reverts_the_processes_and_commits_nothing(tmp_path: Path) -> None:
    from . import test_switch_module as tsm

    root, fake, host, run = worker_only_host(tmp_path)
    first = workload(tmp_path, fake, [lib.Process("offload", "python manage.py heartbeat", 1)])
    first.switch(root / "releases" / OLD)
    fake.broken = {"offload"}
    switch = tsm.make(root, tmp_path / "no-upstream.conf", host, web=False)
    switch.run = run
    switch.workload = workload(tmp_path, fake, [lib.Process("offload", "nosuch", 1)])
    switch.workload.run = switch.workload.units.run = run
    with pytest.raises(tsm.sw.SwitchError) as failed:
        switch.execute()
    fake.broken = set()
    msg = failed.value.msg
    assert "the process offload (app_processes; unit demo-offload@1.service)" in msg
    assert msg.endswith(f"; the processes stay on the live release {OLD}.")
    assert [s["step"] for s in switch.report.steps] == ["processes"]
    # Nothing committed; the old processes run the old release again.
    assert (root / "current").readlink().name == OLD
    assert (root / "processes").readlink().name == OLD
    assert fake.release_at_start["demo-offload@1.service"] == OLD
    assert not any("demo@" in " ".join(c) for c in host.calls)
