"""The app's processes besides web and its schedules, as systemd units (the switch runs them).

Units, in /etc/systemd/system, each starting with a marker line that names its app:

- ``<app>-<process>@.service``: a template per process; instance ``<n>`` is the n-th instance
  on the host (``systemctl status demo-worker@1``). It runs the process's command through the
  app's manage wrapper (``DJDEPLOY_COMMAND``) in the release ``<app_root>/processes`` points
  at, resolved when it starts (the switch moves that link), as the runtime user, with the app's
  environment, sandboxed like the web units, logging to journald as ``<app>-<process>``.
- ``<app>-<schedule>.service`` (oneshot) and ``<app>-<schedule>.timer``: a schedule runs the
  live release (``current``) when its timer fires. A oneshot service is never started twice at
  once (a start while it runs joins the running job), so a schedule never overlaps itself.

The names are readable rather than collision-proof: an app named ``<app>-<process>`` would have
its web template at the same path, so a unit file without this app's marker is never
overwritten (UnitError).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "# Managed by djdeploy"
WANTS = "multi-user.target.wants"
TIMERS_WANTS = "timers.target.wants"

# run(argv) -> (rc, stdout, stderr)
Runner = Callable[[list[str]], tuple[int, str, str]]

SANDBOX = """NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=true
RestrictRealtime=true
RestrictSUIDSGID=true
LockPersonality=true
RemoveIPC=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
DevicePolicy=closed
"""


# Seconds between two looks at the started processes during the settle window.
POLL = 0.5


class UnitError(Exception):
    """A unit cannot be written or a process did not start; the message says which."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


@dataclass
class Process:
    """One process as the host runs it (playbooks/filter_plugins/djdeploy_processes.py)."""

    name: str
    command: str
    instances: int = 1
    stop_timeout: int = 30

    def units(self, app: str) -> list[str]:
        return [f"{app}-{self.name}@{n}.service" for n in range(1, self.instances + 1)]


@dataclass
class Schedule:
    name: str
    command: str
    on_calendar: str
    randomized_delay: int = 0
    here: bool = True


@dataclass
class Settings:
    """Who runs the units and with what (the switch module's units option)."""

    app: str
    app_root: Path
    manage: str
    user: str
    group: str
    read_write_paths: list[str] = field(default_factory=list)
    unit_dir: Path = Path("/etc/systemd/system")
    # Seconds a started process must stay up (not failed, not restarted) to count as started.
    settle: float = 5.0


def env_value(value: str) -> str:
    """A value for Environment="NAME=value": quotes, backslashes and specifiers escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def process_unit(settings: Settings, process: Process) -> str:
    app, root = settings.app, settings.app_root
    paths = " ".join(f"-{p}" for p in settings.read_write_paths)
    return (
        f"{MARKER}: process {process.name} of app {app} (the release switch writes this file).\n"
        f"# Instance %i: the n-th instance on this host; the code is the release\n"
        f"# {root}/processes points at when it starts.\n"
        "[Unit]\n"
        f"Description={app} process {process.name} (%i)\n"
        "After=network.target\n\n"
        "[Service]\n"
        "Type=exec\n"
        f"User={settings.user}\n"
        f"Group={settings.group}\n"
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
        f"Environment=DJDEPLOY_RELEASE_DIR={root}/processes\n"
        f"Environment=DJDEPLOY_PROCESS={process.name} DJDEPLOY_INSTANCE=%i\n"
        f'Environment="DJDEPLOY_COMMAND={env_value(process.command)}"\n'
        f"ExecStart={settings.manage}\n"
        # SIGTERM to the main process (a Celery worker's warm shutdown), the rest of the
        # unit's processes are killed only when stop_timeout runs out.
        "KillMode=mixed\n"
        f"TimeoutStopSec={process.stop_timeout}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        f"SyslogIdentifier={app}-{process.name}\n"
        "UMask=0027\n"
        + (f"ReadWritePaths={paths}\n" if paths else "")
        + SANDBOX
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def schedule_units(settings: Settings, schedule: Schedule) -> tuple[str, str]:
    """The oneshot service and the timer of a schedule."""
    app, root = settings.app, settings.app_root
    paths = " ".join(f"-{p}" for p in settings.read_write_paths)
    head = (
        f"{MARKER}: schedule {schedule.name} of app {app} (the release switch writes this file).\n"
    )
    service = (
        head + "[Unit]\n"
        f"Description={app} schedule {schedule.name}\n"
        "After=network.target\n\n"
        "[Service]\n"
        # oneshot: a start while it runs waits for that run, it never runs twice at once.
        "Type=oneshot\n"
        f"User={settings.user}\n"
        f"Group={settings.group}\n"
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
        f"Environment=DJDEPLOY_RELEASE_DIR={root}/current\n"
        f'Environment="DJDEPLOY_COMMAND={env_value(schedule.command)}"\n'
        f"ExecStart={settings.manage}\n"
        f"SyslogIdentifier={app}-{schedule.name}\n"
        "UMask=0027\n" + (f"ReadWritePaths={paths}\n" if paths else "") + SANDBOX
    )
    timer = (
        head + "[Unit]\n"
        f"Description={app} schedule {schedule.name}\n\n"
        "[Timer]\n"
        f"OnCalendar={schedule.on_calendar}\n"
        + (f"RandomizedDelaySec={schedule.randomized_delay}\n" if schedule.randomized_delay else "")
        + "Persistent=false\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return service, timer


def _marker_of(path: Path) -> str:
    try:
        with path.open() as handle:
            return handle.readline()
    except (OSError, UnicodeDecodeError):
        return ""


class Units:
    """The app's process and schedule units on the host. Commands go through run."""

    def __init__(self, settings: Settings, run: Runner) -> None:
        self.s = settings
        self.run = run
        self.reload_needed = False

    def ours(self, path: Path) -> bool:
        return _marker_of(path).startswith(MARKER) and f" of app {self.s.app} " in _marker_of(path)

    def owned(self, kind: str) -> dict[str, Path]:
        """This app's unit files of a kind (process: the templates, schedule: services and
        timers), by their name (the process's or schedule's)."""
        found: dict[str, Path] = {}
        pattern = re.compile(rf"^{MARKER}: {kind} (\S+) of app {re.escape(self.s.app)} ")
        for path in sorted(self.s.unit_dir.glob(f"{self.s.app}-*")):
            match = pattern.match(_marker_of(path))
            if match and path.is_file():
                found.setdefault(match.group(1), path)
        return found

    def write(self, name: str, text: str) -> str | None:
        """Write a unit file unless it holds text; return its old text ('' when new, None when
        unchanged). A file that is not this app's own is refused."""
        path = self.s.unit_dir / name
        old = ""
        if path.exists():
            if not self.ours(path):
                raise UnitError(
                    f"release: {path} exists and is not a unit djdeploy wrote for {self.s.app}"
                    " (another app's unit of the same name?); rename the process or schedule"
                )
            old = path.read_text()
            if old == text:
                return None
        path.write_text(text)
        path.chmod(0o644)
        self.reload_needed = True
        return old

    def restore(self, name: str, old: str) -> None:
        path = self.s.unit_dir / name
        if old:
            path.write_text(old)
        else:
            path.unlink(missing_ok=True)
        self.reload_needed = True

    def remove(self, name: str) -> None:
        (self.s.unit_dir / name).unlink(missing_ok=True)
        self.reload_needed = True

    def daemon_reload(self) -> None:
        if self.reload_needed:
            self.must(["systemctl", "daemon-reload"], "systemctl daemon-reload")
            self.reload_needed = False

    def must(self, argv: list[str], what: str) -> None:
        rc, out, err = self.run(argv)
        if rc != 0:
            raise UnitError(f"{what} failed (rc {rc}): {(err or out).strip()[:400]}")

    def enabled_instances(self) -> list[str]:
        """Every enabled instance of this app's process templates (what runs at boot)."""
        templates = self.owned("process")
        wants = self.s.unit_dir / WANTS
        found: list[str] = []
        for name in templates:
            found.extend(p.name for p in sorted(wants.glob(f"{self.s.app}-{name}@*.service")))
        return found

    def state(self, unit: str) -> dict[str, str]:
        rc, out, _ = self.run(
            [
                "systemctl",
                "show",
                "--property=ActiveState,SubState,NRestarts,Result",
                unit,
            ]
        )
        values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        return values if rc == 0 else {}

    def log(self, unit: str, lines: int = 15) -> list[str]:
        _, out, _ = self.run(
            ["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit]
        )
        return out.splitlines()[-lines:]


def processes_from(option: list[dict[str, Any]]) -> list[Process]:
    return [
        Process(
            name=str(p["name"]),
            command=str(p["command"]),
            instances=int(p.get("instances", 1)),
            stop_timeout=int(p.get("stop_timeout", 30)),
        )
        for p in option
    ]


def schedules_from(option: list[dict[str, Any]]) -> list[Schedule]:
    return [
        Schedule(
            name=str(s["name"]),
            command=str(s["command"]),
            on_calendar=str(s["on_calendar"]),
            randomized_delay=int(s.get("randomized_delay", 0)),
            here=bool(s.get("here", True)),
        )
        for s in option
    ]


class Workload:
    """The processes and schedules of one host, moved with a release by the switch.

    switch() (before the switch commits): the templates written, every instance of the app's
    processes stopped (a blocking stop: SIGTERM, then up to its stop_timeout), ``processes``
    pointed at the release, the wanted instances enabled and started, each checked after
    settings.settle seconds (active, never restarted); revert() undoes all of it and starts the
    old instances on the old release again. finish() (after the commit): instances no longer
    wanted disabled, templates of processes no longer configured removed, the schedules'
    units written (on their host) or removed. reconcile() is the run with nothing to switch: the
    same end state without moving the link, restarting only instances whose unit changed or
    that do not run.
    """

    def __init__(
        self,
        settings: Settings,
        processes: list[Process],
        schedules: list[Schedule],
        run: Runner,
        sleep: Callable[[float], None],
        replace_link: Callable[[Path, Path], None],
    ) -> None:
        self.s = settings
        self.processes = processes
        self.schedules = schedules
        self.units = Units(settings, run)
        self.run = run
        self.sleep = sleep
        self.replace_link = replace_link
        self.actions: list[str] = []
        self._old_texts: dict[str, str] = {}
        self._before: list[str] = []
        self._old_link: Path | None = None
        self._moved = False

    @property
    def link(self) -> Path:
        return self.s.app_root / "processes"

    def template(self, process: Process) -> str:
        return f"{self.s.app}-{process.name}@.service"

    def wanted(self) -> list[str]:
        return [unit for p in self.processes for unit in p.units(self.s.app)]

    def _patterns(self) -> list[str]:
        names = set(self.units.owned("process")) | {p.name for p in self.processes}
        return [f"{self.s.app}-{name}@*.service" for name in sorted(names)]

    def _write_templates(self) -> set[str]:
        changed = set()
        for process in self.processes:
            name = self.template(process)
            old = self.units.write(name, process_unit(self.s, process))
            if old is not None:
                self._old_texts.setdefault(name, old)
                changed.add(process.name)
                self.actions.append(f"wrote {name}")
        self.units.daemon_reload()
        return changed

    def _process_of(self, unit: str) -> str:
        return unit[len(self.s.app) + 1 :].partition("@")[0]

    def check_started(self, units: list[str], release: str, where: str) -> None:
        """Each unit must stay active, never restarted, for settings.settle seconds.

        Polled every POLL seconds, so a process that fails early fails the check at once
        instead of at the end of the window; one that dies after the window is restarted by
        systemd (Restart=on-failure) and shows in the journal, not here.
        """
        if not units:
            return
        waited = 0.0
        while True:
            step = min(POLL, self.s.settle - waited)
            if step > 0:
                self.sleep(step)
                waited += step
            for unit in units:
                state = self.units.state(unit)
                active = state.get("ActiveState", "unknown")
                restarts = state.get("NRestarts", "0") or "0"
                if active == "active" and restarts == "0":
                    continue
                log = " | ".join(self.units.log(unit))
                raise UnitError(
                    f"release: the process {self._process_of(unit)} (app_processes; unit {unit})"
                    f" of {release} did not start{where} (state {active}/"
                    f"{state.get('SubState', '?')}, {restarts} restart(s) within {waited:g} s of"
                    f" the {self.s.settle:g} s it must keep running). Last log lines: {log}"
                )
            if waited >= self.s.settle:
                return

    def switch(self, release_dir: Path, where: str = "") -> None:
        self._write_templates()
        self._before = self.units.enabled_instances()
        patterns = self._patterns()
        if not patterns:
            return  # no process configured here, none left from before
        if patterns:
            # Blocking: each old instance gets SIGTERM and up to its stop_timeout to finish.
            self.units.must(["systemctl", "stop", *patterns], "stopping the old processes")
            self.actions.append("stopped the old processes")
        self._old_link = self.link.readlink() if self.link.is_symlink() else None
        self.replace_link(self.link, release_dir)
        self._moved = True
        wanted = self.wanted()
        if wanted:
            self.units.must(["systemctl", "enable", "--no-reload", *wanted], "enabling processes")
            self.units.must(["systemctl", "start", *wanted], "starting processes")
            self.actions.append(f"started {', '.join(wanted)}")
        self.check_started(wanted, release_dir.name, where)

    def revert(self) -> None:
        """Back to the processes as they were: best effort, every step tried."""
        patterns = self._patterns()
        if patterns:
            self.run(["systemctl", "stop", *patterns])
        new = [u for u in self.wanted() if u not in self._before]
        if new:
            self.run(["systemctl", "disable", "--no-reload", *new])
        for name, old in self._old_texts.items():
            self.units.restore(name, old)
        if self.units.reload_needed:
            self.run(["systemctl", "daemon-reload"])
            self.units.reload_needed = False
        if self._moved:
            if self._old_link is not None:
                self.replace_link(self.link, self._old_link)
            else:
                self.link.unlink(missing_ok=True)
        if self._before and self._old_link is not None:
            self.run(["systemctl", "start", *self._before])

    def finish(self) -> bool:
        """After the commit: disable what is no longer wanted, remove units of processes and
        schedules no longer configured here, write and enable the schedules of this host."""
        changed = False
        wanted = set(self.wanted())
        unwanted = [u for u in self.units.enabled_instances() if u not in wanted]
        if unwanted:
            self.units.must(["systemctl", "stop", *unwanted], "stopping processes not wanted")
            self.units.must(
                ["systemctl", "disable", "--no-reload", *unwanted], "disabling processes"
            )
            self.actions.append(f"stopped and disabled {', '.join(unwanted)}")
            changed = True
        configured = {p.name for p in self.processes}
        for name, path in self.units.owned("process").items():
            if name not in configured:
                self.units.must(
                    ["systemctl", "stop", f"{self.s.app}-{name}@*.service"], f"stopping {name}"
                )
                self.units.remove(path.name)
                self.actions.append(f"removed {path.name}")
                changed = True
        return self._schedules() or changed

    def _schedules(self) -> bool:
        changed = False
        here = [s for s in self.schedules if s.here]
        keep = {s.name for s in here}
        for name in self.units.owned("schedule"):
            if name not in keep:
                timer = f"{self.s.app}-{name}.timer"
                self.run(["systemctl", "disable", "--now", timer])
                self.units.remove(timer)
                self.units.remove(f"{self.s.app}-{name}.service")
                self.actions.append(f"removed the schedule {name}")
                changed = True
        timers = []
        for schedule in here:
            service, timer = schedule_units(self.s, schedule)
            base = f"{self.s.app}-{schedule.name}"
            for name, text in ((f"{base}.service", service), (f"{base}.timer", timer)):
                if self.units.write(name, text) is not None:
                    self.actions.append(f"wrote {name}")
                    changed = True
            timers.append(f"{base}.timer")
        self.units.daemon_reload()
        for timer in timers:
            enabled = self.run(["systemctl", "is-enabled", "--quiet", timer])[0] == 0
            active = self.run(["systemctl", "is-active", "--quiet", timer])[0] == 0
            if enabled and active and not changed:
                continue
            # restart: a changed OnCalendar takes effect now.
            self.units.must(["systemctl", "enable", timer], f"enabling {timer}")
            self.units.must(["systemctl", "restart", timer], f"starting {timer}")
            self.actions.append(f"started {timer}")
            changed = True
        return changed

    def reconcile(self, current: Path, where: str = "") -> bool:
        """Nothing to switch: the same end state, restarting only what changed or is down."""
        changed = False
        if not self.link.is_symlink() and self.processes:
            self.replace_link(self.link, current)
            self.actions.append(f"pointed processes at {current.name}")
            changed = True
        rewritten = self._write_templates()
        changed = changed or bool(rewritten)
        started = []
        enabled = set(self.units.enabled_instances())
        for process in self.processes:
            for unit in process.units(self.s.app):
                if unit not in enabled:
                    self.units.must(
                        ["systemctl", "enable", "--no-reload", unit], f"enabling {unit}"
                    )
                    changed = True
                state = self.units.state(unit).get("ActiveState", "")
                if process.name in rewritten or state != "active":
                    self.units.must(["systemctl", "restart", unit], f"starting {unit}")
                    self.actions.append(f"started {unit}")
                    started.append(unit)
                    changed = True
        self.check_started(started, current.name, where)
        return self.finish() or changed
