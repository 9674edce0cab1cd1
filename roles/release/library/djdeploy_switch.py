#!/usr/bin/python
"""The blue/green switch of one host, in one module call: start, check, move traffic, retire."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_switch
short_description: Move one host's traffic to a release on the idle color, or leave it untouched
description:
  - Each app runs two socket-activated gunicorn instances, C(<app>@blue) and C(<app>@green);
    the color in C(<app_root>/live-color) serves, nginx's upstream file points at its socket.
    This module moves the host to I(release) in one call, step by step, each step timed.
  - Steps, in order. Prepare (stop the idle color's leftover units, point
    C(<app_root>/colors/<idle>) at C(releases/<release>)); start (socket, then service, which
    waits for gunicorn's readiness); health (GET I(health_path) on the idle color's own socket
    until it answers 200); upstream (rewrite I(upstream_file) to the idle color's socket,
    C(nginx -t), reload nginx); public (run I(check_argv), a C(curl) that prints the status,
    until it prints 200, the request going through nginx as a client's would); commit (C(current)
    and C(previous) links, C(live-color), the new color's socket enabled at boot); drain (wait,
    at most I(drain_timeout) seconds, until every nginx worker that was alive before the reload
    has exited);
    retire (stop the old color and disable it at boot); prune (when I(keep) is set, remove the
    releases beyond the newest I(keep) and their static files, then the venvs no kept release
    uses).
  - Any failure before commit reverts what the run did (the upstream file's old content and an
    nginx reload, the new instance stopped) and fails with a message that says where traffic
    is. The live instance is never stopped before the new one serves through nginx. A failure
    after commit (drain, retire) fails with the release already live and says so. A failure
    while pruning never fails the call (the release is live), the module warns.
  - With I(state=live) the module only keeps the live color running (its socket started and
    enabled at boot), for a run that has nothing to switch.
  - With I(state=staged) (preboot) it runs the prepare, start and health steps only (the idle
    color runs I(release) and answers on its own socket; nginx and the live color are not
    touched), and the lock stays held. A rolling release stages every host side by side before
    the host-by-host switches; each switch then gets the stage's report as I(staged), checks the
    staged color on its socket again (step C(recheck)) instead of starting it, and goes on from
    the upstream step. A staged color that no longer runs is started again as usual. A failed
    stage stops the color it started.
  - With I(state=unstaged) it stops the idle color when it runs I(release) (a staged color of a
    run that stopped before this host switched); the live color is never touched.
  - With I(web=false) (a worker-only host, without gunicorn or an nginx vhost of the app) only the
    processes move (no prepare, start, health, upstream, public, drain or retire step); the
    new release's processes start (the old ones stopped gracefully first, as with a web switch)
    and must keep running, then the commit (C(current), C(previous); no C(live-color)), the
    schedules and the prune. A process that does not start reverts the processes to the old
    release and nothing is committed.
  - Returns a report with the seconds each step took, so a caller can print the host work next
    to the run's total time.
options:
  state:
    description:
      - C(switched) moves the host to I(release); C(live) only makes sure the live color's
        socket is started and enabled (nothing to switch), and needs no other option than
        I(app), I(app_root) and I(host).
      - C(staged) starts I(release) on the idle color and checks it on its socket, nothing
        more (needs I(socket_dir) and I(health_host), not the nginx options); C(unstaged)
        stops the idle color when it runs I(release).
    type: str
    choices: [switched, live, staged, unstaged]
    default: switched
  app:
    description: The app's name (the units are C(<app>@<color>.socket) and C(.service)).
    type: str
    required: true
  web:
    description:
      - Whether the host serves the web tier (gunicorn colors behind nginx). C(false) for a
        worker-only host, whose switch moves its processes only; I(socket_dir),
        I(upstream_file), I(upstream_name), I(health_host) and I(check_argv) are not needed.
    type: bool
    default: true
  app_root:
    description: The app's root (C(releases/), C(colors/), C(current), C(live-color) below it).
    type: path
    required: true
  release:
    description:
      - The release to serve (a directory name in C(<app_root>/releases)). Required with
        I(state=switched) unless I(rollback) is given; so are I(socket_dir),
        I(upstream_file), I(upstream_name), I(health_host) and I(check_argv), unless
        I(web=false).
    type: str
  socket_dir:
    description: Directory of the per-color sockets.
    type: path
  socket_name:
    description:
      - File name of a color's socket in I(socket_dir); C({color}) stands for the color (the
        gunicorn role's socket units use the same name).
    type: str
    default: gunicorn-{color}.sock
  upstream_file:
    description: nginx's upstream file of the app (written by the nginx role, rewritten here).
    type: path
  upstream_name:
    description: The name of the upstream block in I(upstream_file).
    type: str
  health_path:
    description: Path that must answer 200 on the new instance's socket.
    type: str
    default: /healthz
  health_host:
    description: Host header of the socket health check (one of the app's server names).
    type: str
  check_argv:
    description:
      - The command that checks the app through nginx once the upstream moved; it must print
        the HTTP status code only (C(curl --write-out %{http_code} --output /dev/null ...)).
    type: list
    elements: str
  retries:
    description: Attempts of each health check (on the socket, through nginx).
    type: int
    default: 20
  delay:
    description: Seconds between two attempts.
    type: float
    default: 1
  drain_timeout:
    description: Seconds to wait at most for old nginx workers before retiring the old color.
    type: float
    default: 30
  keep:
    description:
      - After a switch, keep the newest I(keep) releases (by id) and remove the others with
        their C(<app_root>/static/<id>), never the release served, the one served before it,
        nor a release that C(previous) or C(next) points at; then remove the venvs in
        C(<app_root>/venvs) that no remaining release's I(venv_link) points at. C(0) prunes
        nothing. Names starting with a dot are never touched.
    type: int
    default: 0
  venv_link:
    description: Name of the link to its venv inside a release (pruning venvs needs it).
    type: str
    default: .djdeploy-venv
  owner:
    description: Owner of the C(live-color) file.
    type: str
  group:
    description: Group of the C(live-color) file.
    type: str
  host:
    description: Host name used in messages (pass C(inventory_hostname)); default the node name.
    type: str
  rollback:
    description:
      - Switch back instead of to I(release) (which is then not needed). Before anything else
        (before the lock is taken), the target is resolved from the host's records (C(to), else
        where C(previous) points) and the call fails with C(refused=true) and the reason when
        the target does not exist, is the live release, failed its switch before, or releases
        after it up to the live one applied migrations (unless C(allow_migrations)).
    type: dict
    suboptions:
      to:
        description: The release id to go back to; empty for the one C(previous) points at.
        type: str
        default: ""
      record:
        description: Name of the release record inside a release directory.
        type: str
        required: true
      failed_marker:
        description: Name of the marker of a release that failed its switch.
        type: str
        required: true
      migrations_file:
        description: Name of the record of the migrations a release applied.
        type: str
        default: .djdeploy-migrations.json
      allow_migrations:
        description: Go back past releases that applied migrations.
        type: bool
        default: false
      manage:
        description: The manage.py wrapper (named in the migrations message).
        type: str
        required: true
      runtime_user:
        description: The runtime user (named in the migrations message).
        type: str
        required: true
  processes:
    description:
      - The app's processes besides web on this host (playbooks/filter_plugins/djdeploy_processes.py
        computes them), each with C(name), C(command), C(instances) here (0 stops them here) and
        C(stop_timeout). Omitted, process units are left alone. With a switch, after the public
        check and before the commit, the template C(<app>-<name>@.service) is written, every
        instance of the app's processes is stopped (SIGTERM, up to its C(stop_timeout)),
        C(<app_root>/processes) is pointed at the release, the instances C(<app>-<name>@<n>) are
        enabled and started and must still run, never restarted, I(units.settle) seconds later;
        otherwise the switch reverts (the old processes start again on the old release) and
        fails naming the process, with its last log lines. With I(state=live), units that
        changed or do not run are (re)started.
    type: list
    elements: dict
  schedules:
    description:
      - The app's schedules (C(name), C(command), C(on_calendar), C(randomized_delay), C(here));
        after the commit (or with I(state=live)), the oneshot service and timer
        C(<app>-<name>.service/.timer) are written and the timer enabled on the host where
        C(here) is true, and removed elsewhere. Omitted, schedule units are left alone.
    type: list
    elements: dict
  units:
    description:
      - How process and schedule units run; required with I(processes) or I(schedules).
    type: dict
    suboptions:
      user:
        description: The runtime user.
        type: str
        required: true
      group:
        description: The runtime group.
        type: str
        required: true
      manage:
        description: The app's manage wrapper (runs a command with C(DJDEPLOY_COMMAND)).
        type: str
        required: true
      read_write_paths:
        description: Paths the units may write (the media directory).
        type: list
        elements: str
        default: []
      settle:
        description: Seconds a started process must keep running to count as started (looked
          at every half second, so a process that fails sooner fails the check at once).
        type: float
        default: 5
  staged:
    description:
      - With I(state=switched), the report of this run's I(state=staged) call on the host
        (C(release), C(new_color), C(steps)). When that color still runs I(release), it is
        checked on its socket (C(recheck)) instead of being prepared and started; its steps
        come first in the report.
    type: dict
  lock:
    description:
      - The run's deploy lock (the options of the djdeploy_lock module with
        C(state=acquired)). Taken before anything else (a run that holds it already, as a
        release's layout call took it, keeps it; another run's lock fails the call, naming its
        holder), released when the host is done (a lock that cannot be released is a warning,
        as the switch is done). After a failure the lock stays held; the caller's abort
        releases the run's locks on every host. With I(state=staged) it is taken (or found
        held by the run) and kept.
    type: dict
attributes:
  check_mode:
    support: full
    description:
      - Reads the live color and the release and reports the switch it would make and what it
        would prune; with I(state=live), what it would start or enable. The lock is only read.
extends_documentation_fragment:
  - djdeploy_lock_option
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Switch to the new release
  djdeploy_switch:
    app: demo
    app_root: /srv/demo
    release: 20260101T000000Z-abcdef12
    socket_dir: /run/demo
    upstream_file: /etc/nginx/djdeploy/demo/upstream.conf
    upstream_name: demo_app
    health_host: demo.example.com
    check_argv: [curl, -s, -o, /dev/null, -w, "%{http_code}", "https://demo.example.com/healthz"]
    keep: 5
    owner: deploy
    group: deploy
  register: switch

- name: Preboot the release on the idle color (a rolling release, every host at once)
  djdeploy_switch:
    state: staged
    app: demo
    app_root: /srv/demo
    release: 20260101T000000Z-abcdef12
    socket_dir: /run/demo
    health_host: demo.example.com
  register: stage

- name: Keep the live color running (nothing to switch)
  djdeploy_switch:
    state: live
    app: demo
    app_root: /srv/demo
"""

RETURN = r"""
rollback:
  description: With I(rollback), what was read (C(live), the live record, and C(target)).
  returned: when rollback is given and the switch ran
  type: dict
lock:
  description: The deploy lock after the call (as djdeploy_lock returns it), with I(lock).
  returned: when lock is given
  type: dict
release:
  description: The release the host serves after the call.
  returned: always
  type: str
live_color:
  description: The color that serves after the call (empty with I(web=false)).
  returned: always
  type: str
web:
  description: Whether the host serves the web tier (the I(web) option).
  returned: with state=switched
  type: bool
new_color:
  description: The idle color the release was started on (empty with I(web=false)).
  returned: with state=switched or staged
  type: str
old_color:
  description: The color that served before (empty on a host's first release).
  returned: always
  type: str
previous_release:
  description: The release that served before (empty on a host's first release).
  returned: always
  type: str
steps:
  description: Each step run, in order, with the seconds it took.
  returned: always
  type: list
  elements: dict
  sample: [{step: start, seconds: 1.21}, {step: health, seconds: 0.05}]
seconds:
  description: Seconds the whole switch took on the host.
  returned: always
  type: float
processes:
  description: What was done to process and schedule units (with I(processes) or I(schedules)).
  returned: when processes or schedules are given
  type: list
  elements: str
pruned:
  description: What the prune step removed (in check mode, what it would remove).
  returned: with state=switched
  type: dict
  sample: {releases: [20251201T000000Z-aaaaaaaa], venvs: [0f3c2a9e]}
log:
  description: The new instance's last log lines (when it did not start or answer).
  returned: on failure
  type: list
  elements: str
"""

import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_files import remove_path, replace_symlink, write_atomic
    from djdeploy_http import unix_http_get
    from djdeploy_lock_lib import (
        LOCK_OPTION_SPEC,
        DeployLock,
        LockError,
        LockRefusedError,
        Owner,
        lock_from_option,
        take_for_run,
    )
    from djdeploy_processes_lib import (
        Settings,
        UnitError,
        Workload,
        processes_from,
        schedules_from,
    )
    from djdeploy_releases_lib import Config as ReleasesConfig
    from djdeploy_releases_lib import StateError, rollback_target
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_files import remove_path, replace_symlink, write_atomic
    from ansible.module_utils.djdeploy_http import unix_http_get
    from ansible.module_utils.djdeploy_lock_lib import (
        LOCK_OPTION_SPEC,
        DeployLock,
        LockError,
        LockRefusedError,
        Owner,
        lock_from_option,
        take_for_run,
    )
    from ansible.module_utils.djdeploy_processes_lib import (
        Settings,
        UnitError,
        Workload,
        processes_from,
        schedules_from,
    )
    from ansible.module_utils.djdeploy_releases_lib import Config as ReleasesConfig
    from ansible.module_utils.djdeploy_releases_lib import StateError, rollback_target

COLORS = ("blue", "green")
# nginx's own reload, the command nginx.service's ExecReload runs: the master re-reads its
# configuration. `systemctl reload nginx` does the same through systemd's job queue, 0.07-0.08 s
# more a reload on the hosts measured (a switch reloads the app host's nginx once; the balancers'
# reloads are the rotation module's).
NGINX_RELOAD = ["nginx", "-s", "reload"]
# nginx's master tells the old workers to finish 100 ms after it started the new ones (its
# reload waits that long for them), so no old worker exits sooner: the drain's first look is
# that long after the reload. Then seconds between two looks while the old ones drain, doubling
# from the first to the last value (an old worker without a request in flight exits within a
# few milliseconds; a long request may hold one for seconds).
OLD_WORKERS_TOLD_AFTER = 0.1
DRAIN_FIRST_PAUSE = 0.005
DRAIN_MAX_PAUSE = 0.5

# nginx workers, serving ("nginx: worker process") or draining after a reload ("... is
# shutting down"): the ones alive before the reload are the old configuration's.
WORKERS = "nginx: worker process"

# run(argv) -> (rc, stdout, stderr)
Runner = Callable[[list[str]], tuple[int, str, str]]
# renice(pid, niceness): set a process's niceness; raises OSError when it is gone.
Renice = Callable[[int, int], None]
# The retiring color's niceness: its teardown gets CPU only when the live color does not need it.
RETIRE_NICENESS = 19


def os_renice(pid: int, niceness: int) -> None:
    os.setpriority(os.PRIO_PROCESS, pid, niceness)


def owner_name(pid: int, proc: Path = Path("/proc")) -> str:
    """The user name that owns process pid ("" when it is gone or the user has no name)."""
    try:
        return pwd.getpwuid((proc / str(pid)).stat().st_uid).pw_name
    except (OSError, KeyError):
        return ""


def same_cgroup(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The processes in the cgroup of pid (a unit's processes: a gunicorn master and its
    workers), found by their /proc/<pid>/cgroup; empty when pid is gone."""
    try:
        mine = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cgroup").read_text() == mine:
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


# http_get(socket_path, path, headers, timeout) -> status code; raises OSError when unreachable.
HttpGet = Callable[[str, str, dict[str, str], float], int]


def run_command(argv: list[str]) -> tuple[int, str, str]:
    """Run a command on the host (no shell) and return its exit code and output."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _chown(path: Path, user: str | None, group: str | None) -> None:
    if user is not None and group is not None:
        shutil.chown(path, user, group)
    elif user is not None:
        shutil.chown(path, user=user)
    elif group is not None:
        shutil.chown(path, group=group)


def upstream_text(name: str, socket_path: str, color: str, app: str) -> str:
    """The upstream file nginx includes: one server, the live color's socket."""
    return (
        "# Managed by djdeploy: the release switch rewrites this file.\n"
        f"# Live color of {app}: {color}.\n"
        f"upstream {name} {{\n"
        f"    server unix:{socket_path} fail_timeout=0;\n"
        "}\n"
    )


@dataclass
class Config:
    """What the switch needs to know about the host (the module's options)."""

    app: str
    app_root: Path
    release: str
    socket_dir: Path
    upstream_file: Path
    upstream_name: str
    health_host: str
    check_argv: list[str]
    health_path: str = "/healthz"
    retries: int = 20
    delay: float = 1.0
    drain_timeout: float = 30.0
    keep: int = 0
    venv_link: str = ".djdeploy-venv"
    socket_name: str = "gunicorn-{color}.sock"
    owner: str | None = None
    group: str | None = None
    host: str = ""
    # False: a worker-only host, whose switch moves the processes only.
    web: bool = True

    def unit(self, color: str, kind: str) -> str:
        return f"{self.app}@{color}.{kind}"

    def socket(self, color: str) -> str:
        return str(self.socket_dir / self.socket_name.format(color=color))


class SwitchError(Exception):
    """The switch stopped; the message tells the user where traffic is."""

    def __init__(self, msg: str, log: list[str] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.log = log or []


@dataclass
class Report:
    """What the switch did, step by step."""

    release: str
    live_color: str
    old_color: str
    previous_release: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    changed: bool = False
    pruned: dict[str, list[str]] = field(default_factory=lambda: {"releases": [], "venvs": []})
    warnings: list[str] = field(default_factory=list)
    web: bool = True
    new_color: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "web": self.web,
            "release": self.release,
            "live_color": self.live_color,
            "new_color": self.new_color,
            "old_color": self.old_color,
            "previous_release": self.previous_release,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "changed": self.changed,
            "pruned": self.pruned,
        }


def _visible(directory: Path) -> list[Path]:
    """The entries of directory whose name does not start with a dot (none when it is absent)."""
    try:
        return [entry for entry in directory.iterdir() if not entry.name.startswith(".")]
    except FileNotFoundError:
        return []


def _link_name(link: Path) -> str:
    """The name of the directory a link points at (empty when it is not a link)."""
    return link.readlink().name if link.is_symlink() else ""


class Pruner:
    """Remove old releases, their static files, then venvs no remaining release uses.

    Releases are the real directories in <app_root>/releases (not links, no dot names), newest
    id first; the first `keep` stay, and so does every id in `protect`. A removal that fails is
    a warning and the others go on: a release is live by then, pruning must not undo it.
    """

    def __init__(
        self,
        app_root: Path,
        keep: int,
        live: str,
        protect: set[str],
        venv_link: str,
        remove: Callable[[Path], None] = remove_path,
    ) -> None:
        self.app_root = app_root
        self.keep = keep
        self.live = live
        self.protect = {p for p in (*protect, live) if p}
        self.venv_link = venv_link
        self.remove = remove
        self.pruned: dict[str, list[str]] = {"releases": [], "venvs": []}
        self.warnings: list[str] = []

    def releases_to_prune(self) -> list[str]:
        releases = self.app_root / "releases"
        names = [e.name for e in _visible(releases) if e.is_dir() and not e.is_symlink()]
        newest_first = sorted(names, key=lambda n: (n.lower(), n), reverse=True)
        return [n for n in newest_first[self.keep :] if n not in self.protect]

    def venvs_to_prune(self, gone: set[str]) -> list[str]:
        """Venvs no release left in releases/ (other than `gone`) links to."""
        used = {
            (entry / self.venv_link).resolve()
            for entry in _visible(self.app_root / "releases")
            if entry.name not in gone and (entry / self.venv_link).is_symlink()
        }
        return [
            venv.name
            for venv in sorted(_visible(self.app_root / "venvs"))
            if venv.is_dir() and not venv.is_symlink() and venv.resolve() not in used
        ]

    def run(self, dry_run: bool = False) -> dict[str, list[str]]:
        old = self.releases_to_prune()
        if not old:
            return self.pruned
        gone: set[str] = set()
        for release in old:
            try:
                if not dry_run:
                    for kind in ("releases", "static"):
                        self.remove(self.app_root / kind / release)
            except OSError as exc:
                self.warnings.append(f"removing the old release {release} failed: {exc}")
                continue
            gone.add(release)
            self.pruned["releases"].append(release)
        if not dry_run:
            gone = set()  # what is still in releases/ after the removals counts as kept
        if not (self.app_root / "releases" / self.live / self.venv_link).is_symlink():
            # The live release always links its venv: without that link, the name is wrong and
            # every venv would look unused.
            self.warnings.append(
                f"venvs were not pruned: the live release {self.live} has no {self.venv_link} link"
            )
            return self.pruned
        for venv in self.venvs_to_prune(gone):
            try:
                if not dry_run:
                    self.remove(self.app_root / "venvs" / venv)
            except OSError as exc:
                self.warnings.append(f"removing the unused venv {venv} failed: {exc}")
                continue
            self.pruned["venvs"].append(venv)
        return self.pruned


class Switch:
    """The blue/green switch of one host. Every side effect goes through injected callables."""

    def __init__(
        self,
        cfg: Config,
        run: Runner = run_command,
        http_get: HttpGet = unix_http_get,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        chown: Callable[[Path, str | None, str | None], None] | None = None,
        remove: Callable[[Path], None] | None = None,
        renice: Renice = os_renice,
        proc: Path = Path("/proc"),
        workload: Workload | None = None,
        staged: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        # The report of this run's stage call on the host (state=staged), if any.
        self.staged = staged or {}
        # Seconds of the staged steps taken over (they count in the report's total).
        self._staged_seconds = 0.0
        self.workload = workload
        self.renice = renice
        self.proc = proc
        self.remove = remove or remove_path
        self.run = run
        self.http_get = http_get
        self.sleep = sleep
        self.clock = clock
        self.chown = chown or _chown
        # A worker-only host has no colors.
        self.old_color = self._read_live_color() if cfg.web else ""
        self.new_color = ("green" if self.old_color == "blue" else "blue") if cfg.web else ""
        self.previous_release = self._read_current()
        # The upstream file's content before this run moved it (None: not moved yet).
        self._moved_from: str | None = None
        # nginx's workers before this run's reload (PIDs); the drain waits for them to exit.
        self._old_workers: set[str] = set()
        self._reloaded_at = 0.0
        self.report = Report(
            release=cfg.release,
            live_color=self.old_color,
            old_color=self.old_color,
            previous_release=self.previous_release,
            web=cfg.web,
            new_color=self.new_color,
        )

    # -- reading the host ------------------------------------------------------------------

    def _read_live_color(self) -> str:
        try:
            color = (self.cfg.app_root / "live-color").read_text().strip()
        except OSError:
            return ""
        return color if color in COLORS else ""

    def _read_current(self) -> str:
        current = self.cfg.app_root / "current"
        if not current.is_symlink():
            return ""
        return current.readlink().name

    @property
    def release_dir(self) -> Path:
        return self.cfg.app_root / "releases" / self.cfg.release

    # -- helpers -----------------------------------------------------------------------------

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        start, at = self.clock(), time.time()
        try:
            yield
        finally:
            self.report.steps.append(
                # at: when the step began (UTC epoch seconds), to line steps up with a load
                # probe's slow requests.
                {"step": name, "seconds": round(self.clock() - start, 3), "at": round(at, 3)}
            )

    def _systemctl(self, *args: str) -> tuple[int, str, str]:
        return self.run(["systemctl", *args])

    def _must(self, argv: list[str], what: str) -> None:
        rc, out, err = self.run(argv)
        if rc != 0:
            raise SwitchError(f"{what} failed (rc {rc}): {(err or out).strip()[:400]}")

    def _stop(self, color: str) -> None:
        self._systemctl("stop", self.cfg.unit(color, "service"), self.cfg.unit(color, "socket"))

    def _log(self, color: str) -> list[str]:
        _, out, _ = self.run(
            ["journalctl", "--no-pager", "-n", "25", "-u", self.cfg.unit(color, "service")]
        )
        return out.splitlines()[-25:]

    def _where(self) -> str:
        return f" on {self.cfg.host}" if self.cfg.host else ""

    def _live_phrase(self) -> str:
        if not self.previous_release:
            return "the live release" if self.cfg.web else "nothing (no release was live here)"
        return f"the live release {self.previous_release}"

    def _socket_healthy(self) -> tuple[bool, str]:
        headers = {"Host": self.cfg.health_host, "X-Forwarded-Proto": "https"}
        last = ""
        for attempt in range(max(1, self.cfg.retries)):
            if attempt:
                self.sleep(self.cfg.delay)
            try:
                status = self.http_get(
                    self.cfg.socket(self.new_color), self.cfg.health_path, headers, 10.0
                )
            except OSError as exc:
                last = str(exc) or exc.__class__.__name__
                continue
            if status == 200:
                return True, ""
            last = f"status {status}"
        return False, last

    def _public_healthy(self) -> tuple[bool, str]:
        last = ""
        for attempt in range(max(1, self.cfg.retries)):
            if attempt:
                self.sleep(self.cfg.delay)
            rc, out, err = self.run(list(self.cfg.check_argv))
            if rc == 0 and out.strip() == "200":
                return True, ""
            last = f"{out.strip()} {err.strip()}".strip() or f"rc {rc}"
        return False, last

    def _restore_upstream(self, old_text: str | None) -> None:
        if old_text is None:
            return
        write_atomic(self.cfg.upstream_file, old_text, 0o644)
        self.run(NGINX_RELOAD)

    # -- the switch ----------------------------------------------------------------------------

    def plan(self) -> dict[str, Any]:
        """What execute() would do (check mode)."""
        self._check_release()
        if self.cfg.keep > 0:
            pruner = self._pruner()
            self.report.pruned = pruner.run(dry_run=True)
            self.report.warnings.extend(pruner.warnings)
        data = self.report.as_dict()
        data.update(live_color=self.new_color, changed=True)
        return data

    def execute_processes_only(self) -> Report:
        """A worker-only host (web=false): the processes move to the release (the old ones
        stopped gracefully, the new ones must keep running, else they go back to the old
        release and nothing is committed), then the commit without a color, the schedules and
        the prune."""
        started = self.clock()
        try:
            self._check_release()
            try:
                self._switch_processes(None)
            except OSError as exc:
                raise SwitchError(
                    f"release: switching the processes to {self.cfg.release} failed"
                    f"{self._where()} ({exc}); they stay on {self._live_phrase()}."
                ) from exc
            self._commit()
            self._finish_processes()
            self._prune()
        finally:
            self.report.seconds = self.clock() - started
        return self.report

    def _pruner(self) -> Pruner:
        root = self.cfg.app_root
        # Never the release served now, the one before it, nor what previous or next points at
        # (nginx serves static files from current, next and previous).
        protect = {self.previous_release, _link_name(root / "previous"), _link_name(root / "next")}
        return Pruner(
            root, self.cfg.keep, self.cfg.release, protect, self.cfg.venv_link, self.remove
        )

    def _prune(self) -> None:
        """The last step, after a committed switch: a failure here is a warning."""
        if self.cfg.keep <= 0:
            return
        pruner: Pruner | None = None
        stopped: list[str] = []
        with self._step("prune"):
            try:
                pruner = self._pruner()
                self.report.pruned = pruner.pruned  # filled as it goes, kept if it stops
                pruner.run()
            except Exception as exc:  # anything: the switch is committed, it must not fail now
                stopped.append(f"it stopped: {exc}")
        self.report.warnings.extend(
            f"release: {self.cfg.release} is live{self._where()}, but pruning: {warning}"
            for warning in [*(pruner.warnings if pruner else []), *stopped]
        )

    def _check_release(self) -> None:
        if not self.release_dir.is_dir():
            raise SwitchError(
                f"release: {self.release_dir} does not exist{self._where()}; nothing was changed."
            )

    def execute(self) -> Report:
        """Run every step; revert and raise SwitchError when one fails before commit."""
        if not self.cfg.web:
            return self.execute_processes_only()
        started = self.clock()
        try:
            self._check_release()
            try:
                self._start_or_adopt()
                old_upstream = self._move_upstream()
                self._check_public(old_upstream)
                self._switch_processes(old_upstream)
            except OSError as exc:
                # An I/O error of our own (a link, the upstream file): undo, as for a failed check.
                self._restore_upstream(self._moved_from)
                self._stop(self.new_color)
                raise SwitchError(
                    f"release: switching to {self.cfg.release} failed{self._where()} ({exc});"
                    f" traffic stays on {self._live_phrase()}."
                ) from exc
            self._commit()
            self._finish_processes()
            self._retire()
            self._prune()
        finally:
            self.report.seconds = self.clock() - started + self._staged_seconds
        return self.report

    def stage(self) -> Report:
        """Preboot: start the release on the idle color and check it on its own socket; nginx,
        the live color and the processes are not touched. A failure stops what it started."""
        started = self.clock()
        try:
            self._check_release()
            try:
                self._start_new()
            except OSError as exc:
                self._stop(self.new_color)
                raise SwitchError(
                    f"release: starting {self.cfg.release} on the idle color failed"
                    f"{self._where()} ({exc}); traffic stays on {self._live_phrase()}."
                ) from exc
            self.report.changed = True
        finally:
            self.report.seconds = self.clock() - started
        return self.report

    def unstage(self) -> Report:
        """Stop the idle color when it runs the release (a staged color the run never switched
        to); anything else is left alone."""
        color = self.new_color
        if color and self.runs_release(color):
            with self._step("unstage"):
                self._stop(color)
            self.report.changed = True
        return self.report

    def runs_release(self, color: str) -> bool:
        """Whether the color's link points at the release and its service is active."""
        link = self.cfg.app_root / "colors" / color
        if not link.is_symlink() or link.readlink().name != self.cfg.release:
            return False
        rc, out, _ = self._systemctl("is-active", self.cfg.unit(color, "service"))
        return rc == 0 and out.strip() == "active"

    def _start_or_adopt(self) -> None:
        """Start the idle color, or take over the one this run staged when it still runs the
        release (checked again on its socket: it must answer now, not only when staged)."""
        staged = self.staged
        if not staged:
            self._start_new()
            return
        if (
            staged.get("release") != self.cfg.release
            or staged.get("new_color") != self.new_color
            or not self.runs_release(self.new_color)
        ):
            self.report.warnings.append(
                f"release: the staged {self.new_color} color of {self.cfg.release} was not"
                f" running{self._where()}; it was started again."
            )
            self._start_new()
            return
        steps = [dict(step) for step in staged.get("steps", [])]
        self.report.steps.extend(steps)
        self._staged_seconds = sum(float(step.get("seconds", 0)) for step in steps)
        with self._step("recheck"):
            ok, last = self._socket_healthy()
        if not ok:
            self._failed_to_start(f"last: {last}")

    def _failed_to_start(self, failure: str) -> None:
        """Stop the new color and raise with its last log lines."""
        cfg, color = self.cfg, self.new_color
        log = self._log(color)
        self._stop(color)
        raise SwitchError(
            f"release: {cfg.release} did not start or answer {cfg.health_path} with 200"
            f"{self._where()} ({failure}); traffic stays on {self._live_phrase()}."
            f" Last log lines: {' | '.join(log)}",
            log=log,
        )

    def _start_new(self) -> None:
        cfg, color = self.cfg, self.new_color
        with self._step("prepare"):
            self._stop(color)
            replace_symlink(cfg.app_root / "colors" / color, self.release_dir)
        failure = ""
        with self._step("start"):
            for kind in ("socket", "service"):
                rc, out, err = self._systemctl("start", cfg.unit(color, kind))
                if rc != 0:
                    failure = f"{cfg.unit(color, kind)} did not start: {(err or out).strip()[:300]}"
                    break
        if not failure:
            with self._step("health"):
                ok, last = self._socket_healthy()
            if not ok:
                failure = f"last: {last}"
        if failure:
            self._failed_to_start(failure)

    def _move_upstream(self) -> str | None:
        cfg, color = self.cfg, self.new_color
        with self._step("upstream"):
            try:
                old_text: str | None = cfg.upstream_file.read_text()
            except OSError:
                old_text = None
            write_atomic(
                cfg.upstream_file,
                upstream_text(cfg.upstream_name, cfg.socket(color), color, cfg.app),
                0o644,
            )
            self._moved_from = old_text
            rc, out, err = self.run(["nginx", "-t", "-q"])
            if rc == 0:
                self._old_workers = self._nginx_workers()
                rc, out, err = self.run(NGINX_RELOAD)
                self._reloaded_at = self.clock()
            if rc != 0:
                self._restore_upstream(old_text)
                self._stop(color)
                raise SwitchError(
                    f"release: nginx refused the upstream of {cfg.release}{self._where()}"
                    f" ({(err or out).strip()[:400]}); the upstream file is restored and traffic"
                    f" stays on {self._live_phrase()}."
                )
        return old_text

    def _check_public(self, old_upstream: str | None) -> None:
        cfg = self.cfg
        with self._step("public"):
            ok, last = self._public_healthy()
        if not ok:
            self._restore_upstream(old_upstream)
            self._stop(self.new_color)
            raise SwitchError(
                f"release: {cfg.release} answered on its socket but not through nginx"
                f"{self._where()} (last: {last}); nginx points at the live release again."
            )

    def _switch_processes(self, old_upstream: str | None) -> None:
        """The processes move only once the web switch answers through nginx; one that does
        not start reverts the processes, then the web switch, like a failed health check."""
        if self.workload is None:
            return
        with self._step("processes"):
            try:
                self.workload.switch(self.release_dir, self._where())
            except (UnitError, OSError) as exc:
                self.workload.revert()
                cause = exc.msg if isinstance(exc, UnitError) else f"release: {exc}"
                if not self.cfg.web:
                    raise SwitchError(
                        f"{cause}; the processes stay on {self._live_phrase()}."
                    ) from exc
                self._restore_upstream(old_upstream)
                self._stop(self.new_color)
                raise SwitchError(
                    f"{cause}; the processes and traffic stay on {self._live_phrase()}."
                ) from exc

    def _finish_processes(self) -> None:
        if self.workload is None:
            return
        with self._step("schedules"):
            try:
                self.workload.finish()
            except (UnitError, OSError) as exc:
                msg = exc.msg if isinstance(exc, UnitError) else str(exc)
                raise SwitchError(
                    f"release: {self.cfg.release} is live{self._where()}, but cleaning up the"
                    f" processes or writing the schedules failed: {msg}"
                ) from exc

    def _commit(self) -> None:
        cfg = self.cfg
        with self._step("commit"):
            replace_symlink(cfg.app_root / "current", self.release_dir)
            if self.previous_release and self.previous_release != cfg.release:
                replace_symlink(
                    cfg.app_root / "previous", cfg.app_root / "releases" / self.previous_release
                )
            self.report.changed = True
            if not cfg.web:
                return  # no color on a worker-only host
            live = cfg.app_root / "live-color"
            write_atomic(live, f"{self.new_color}\n", 0o644)
            if cfg.owner or cfg.group:
                self.chown(live, cfg.owner, cfg.group)
            self.report.live_color = self.new_color
            # --no-reload: only the boot-time link changes; the running manager needs no reload
            # for a unit that is already started (a daemon-reload costs a few hundred ms).
            self._must(
                ["systemctl", "enable", "--no-reload", cfg.unit(self.new_color, "socket")], "enable"
            )

    def _lower_priority(self, unit: str) -> None:
        """Renice the unit's processes before they stop: measured under load, the teardown of
        a stopping gunicorn (master and workers exiting at once) delayed the live color's
        requests by a few hundred ms on a 2-core host. Best effort: a process that is gone or
        a unit without one is skipped."""
        rc, out, _ = self.run(["systemctl", "show", "--property=MainPID", "--value", unit])
        main = int(out.strip()) if rc == 0 and out.strip().isdigit() else 0
        if main <= 0:
            return
        denied: dict[str, list[str]] = {}  # owner -> PIDs root may not renice
        for pid in same_cgroup(main, self.proc):
            try:
                self.renice(pid, RETIRE_NICENESS)
            except PermissionError:
                owner = owner_name(pid, self.proc)
                if owner:
                    denied.setdefault(owner, []).append(str(pid))
            except OSError:
                continue
        # Root without CAP_SYS_NICE (a container's root: the test and bench hosts) may not
        # renice another user's processes, but their owner may lower their priority without any
        # capability.
        for owner, pids in denied.items():
            self.run(["runuser", "-u", owner, "--", "renice", "-n", str(RETIRE_NICENESS), *pids])

    def _nginx_workers(self) -> set[str]:
        """PIDs of nginx's worker processes now (serving or shutting down)."""
        rc, out, _ = self.run(["pgrep", "-f", WORKERS])
        return set(out.split()) if rc == 0 else set()

    def _still_workers(self, pids: set[str]) -> set[str]:
        """Those of ``pids`` that are still nginx workers, read in /proc: a look costs no
        process (pgrep took 5-10 ms), so the drain can look often."""
        alive = set()
        for pid in pids:
            try:
                cmdline = (self.proc / pid / "cmdline").read_bytes()
            except OSError:
                continue
            if WORKERS.encode() in cmdline:
                alive.add(pid)
        return alive

    def _retire(self) -> None:
        old = self.old_color
        if not old:
            return
        with self._step("drain"):
            # The reload returns before nginx has replaced its workers: wait until every worker
            # that was alive before it has exited (the old ones finish their requests, which may
            # go to the old color), not merely until none is marked as shutting down yet.
            # First looked at when nginx has told them to finish (OLD_WORKERS_TOLD_AFTER after
            # the reload), then often (old workers with no request in flight exit within
            # milliseconds), then less and less often (a long request may hold one).
            # No pause outlasts drain_timeout (0: look once, do not wait).
            deadline = self.clock() + self.cfg.drain_timeout
            first = min(self._reloaded_at + OLD_WORKERS_TOLD_AFTER, deadline) - self.clock()
            if first > 0 and self._still_workers(self._old_workers):
                self.sleep(first)
            pause = DRAIN_FIRST_PAUSE
            while self._still_workers(self._old_workers) and self.clock() < deadline:
                self.sleep(min(pause, deadline - self.clock()))
                pause = min(pause * 2, DRAIN_MAX_PAUSE)
        with self._step("retire"):
            self._lower_priority(self.cfg.unit(old, "service"))
            try:
                # Queued, not awaited (--no-block): the old color no longer gets traffic, and
                # gunicorn's graceful stop (SIGTERM: workers finish their requests within
                # graceful_timeout) goes on after the module returns. The next switch's prepare
                # step waits for it (a blocking stop of that color).
                self._must(
                    [
                        "systemctl",
                        "stop",
                        "--no-block",
                        self.cfg.unit(old, "service"),
                        self.cfg.unit(old, "socket"),
                    ],
                    "stopping the old color",
                )
                self._must(
                    ["systemctl", "disable", "--no-reload", self.cfg.unit(old, "socket")],
                    "disabling the old color",
                )
            except SwitchError as exc:
                raise SwitchError(
                    f"release: {self.cfg.release} is live{self._where()}, but stopping the old"
                    f" color {old} failed: {exc.msg}"
                ) from exc


def keep_live(
    app: str, app_root: Path, host: str, run: Runner = run_command, check_mode: bool = False
) -> dict[str, Any]:
    """Nothing to switch: make sure the live color's socket is started and enabled at boot."""
    try:
        color = (app_root / "live-color").read_text().strip()
    except OSError:
        color = ""
    if color not in COLORS:
        where = f" on {host}" if host else ""
        raise SwitchError(
            f"release: {app_root}/live-color names no live color{where} (got {color!r});"
            " run the release again with -e release_force=true to switch to a release."
        )
    unit = f"{app}@{color}.socket"
    done: list[str] = []
    for query, action in (("is-active", "start"), ("is-enabled", "enable")):
        if run(["systemctl", query, "--quiet", unit])[0] == 0:
            continue
        done.append(action)
        if check_mode:
            continue
        rc, out, err = run(["systemctl", action, unit])
        if rc != 0:
            raise SwitchError(
                f"release: {action} {unit} failed{' on ' + host if host else ''}"
                f" (rc {rc}): {(err or out).strip()[:400]}"
            )
    return {"live_color": color, "unit": unit, "actions": done, "changed": bool(done)}


class RunLock:
    """The run's deploy lock around the switch: taken (again) before anything changes,
    released when the host is done. After a failure it stays held: the run's abort releases
    the locks of every host."""

    def __init__(self, option: dict[str, Any], check_mode: bool = False) -> None:
        self.lock: DeployLock
        self.owner: Owner
        self.lock, self.owner = lock_from_option(option)
        self.break_lock = bool(option.get("break_lock"))
        self.check_mode = check_mode
        self.report: dict[str, Any] = {}
        self.warnings: list[str] = []

    def take(self) -> None:
        """Take the lock (a run that holds it already keeps it); SwitchError when refused."""
        try:
            taken, warnings = take_for_run(
                self.lock, self.owner, break_lock=self.break_lock, check_mode=self.check_mode
            )
        except LockRefusedError as exc:
            self.report = exc.result.as_dict()
            raise SwitchError(str(exc)) from exc
        except LockError as exc:
            raise SwitchError(str(exc)) from exc
        self.report = taken.as_dict()
        self.warnings.extend(warnings)

    def give_back(self) -> str | None:
        """Release the lock; a warning when it could not be (the switch itself is done)."""
        try:
            released = self.lock.release(self.owner.token, check_mode=self.check_mode)
        except LockError as exc:
            return f"{exc}; the next run can break it with -e release_break_lock=true"
        self.report = released.as_dict()
        if not released.released:
            return f"release: the deploy lock was not released: {released.msg}"
        return None


def resolve_rollback(
    app_root: Path, host: str, option: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A rollback's target release and what was read ({live, target}); SwitchError with the
    reason when it must not go ahead (read-only: nothing has changed yet)."""
    cfg = ReleasesConfig(
        app_root=app_root,
        record=option["record"],
        failed_marker=option["failed_marker"],
        migrations_file=option["migrations_file"],
        rollback=True,
        rollback_to=option.get("to") or "",
        host=host,
    )
    try:
        live, target = rollback_target(
            cfg,
            allow_migrations=bool(option.get("allow_migrations")),
            manage=option["manage"],
            runtime_user=option["runtime_user"],
        )
    except StateError as exc:
        raise SwitchError(exc.msg) from exc
    return str(target["id"]), {"live": live, "target": target}


ROLLBACK_OPTION_SPEC: dict[str, Any] = {
    "type": "dict",
    "options": {
        "to": {"type": "str", "default": ""},
        "record": {"type": "str", "required": True},
        "failed_marker": {"type": "str", "required": True},
        "migrations_file": {"type": "str", "default": ".djdeploy-migrations.json"},
        "allow_migrations": {"type": "bool", "default": False},
        "manage": {"type": "str", "required": True},
        "runtime_user": {"type": "str", "required": True},
    },
}


UNITS_OPTION_SPEC: dict[str, Any] = {
    "type": "dict",
    "options": {
        "user": {"type": "str", "required": True},
        "group": {"type": "str", "required": True},
        "manage": {"type": "str", "required": True},
        "read_write_paths": {"type": "list", "elements": "str", "default": []},
        "settle": {"type": "float", "default": 5.0},
    },
}


def workload_from_params(p: dict[str, Any], run: Runner = run_command) -> Workload | None:
    """The processes and schedules the call manages; None when it manages neither."""
    if p["processes"] is None and p["schedules"] is None:
        return None
    units = p["units"]
    if not units:
        raise SwitchError("release: djdeploy_switch needs units with processes or schedules")
    settings = Settings(
        app=p["app"],
        app_root=Path(p["app_root"]),
        manage=units["manage"],
        user=units["user"],
        group=units["group"],
        read_write_paths=list(units["read_write_paths"]),
        settle=float(units["settle"]),
    )
    return Workload(
        settings,
        processes_from(p["processes"] or []),
        schedules_from(p["schedules"] or []),
        run=run,
        sleep=time.sleep,
        replace_link=replace_symlink,
    )


def main() -> None:
    needed_to_switch = [
        "socket_dir",
        "upstream_file",
        "upstream_name",
        "health_host",
        "check_argv",
    ]
    module = AnsibleModule(
        argument_spec={
            "state": {
                "type": "str",
                "choices": ["switched", "live", "staged", "unstaged"],
                "default": "switched",
            },
            "app": {"type": "str", "required": True},
            "app_root": {"type": "path", "required": True},
            "web": {"type": "bool", "default": True},
            "release": {"type": "str"},
            "socket_dir": {"type": "path"},
            "socket_name": {"type": "str", "default": "gunicorn-{color}.sock"},
            "upstream_file": {"type": "path"},
            "upstream_name": {"type": "str"},
            "health_path": {"type": "str", "default": "/healthz"},
            "health_host": {"type": "str"},
            "check_argv": {"type": "list", "elements": "str"},
            "retries": {"type": "int", "default": 20},
            "delay": {"type": "float", "default": 1.0},
            "drain_timeout": {"type": "float", "default": 30.0},
            "keep": {"type": "int", "default": 0},
            "venv_link": {"type": "str", "default": ".djdeploy-venv"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "host": {"type": "str"},
            "lock": LOCK_OPTION_SPEC,
            "rollback": ROLLBACK_OPTION_SPEC,
            "processes": {"type": "list", "elements": "dict"},
            "schedules": {"type": "list", "elements": "dict"},
            "units": UNITS_OPTION_SPEC,
            "staged": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    p = module.params
    web: bool = p["web"]
    missing = [name for name in needed_to_switch if p[name] is None]
    state: str = p["state"]
    if state == "staged":
        # Preboot: no nginx option is used.
        missing = [name for name in ("socket_dir", "health_host") if p[name] is None]
    if web and state in ("switched", "staged") and missing:
        module.fail_json(
            msg=f"state is {state} but all of the following are missing: {', '.join(missing)}"
        )
    if state in ("staged", "unstaged") and p["rollback"]:
        module.fail_json(msg=f"release: state={state} is for a release, not a rollback")
    if state == "staged" and not web:
        module.fail_json(msg="release: state=staged is for a web host (web=true)")
    if state == "unstaged" and not web:
        module.exit_json(changed=False, msg="a worker-only host stages nothing")
    host = p["host"] or socket.gethostname()
    release: str = p["release"] or ""
    rolled_back: dict[str, Any] = {}
    if p["rollback"]:
        try:
            release, rolled_back = resolve_rollback(Path(p["app_root"]), host, p["rollback"])
        except SwitchError as exc:
            module.fail_json(msg=exc.msg, refused=True)
    elif state != "live" and not release:
        module.fail_json(
            msg=f"release: djdeploy_switch needs release (or rollback) with state={state}"
        )
    # unstaged runs in a failed run's abort, which releases the locks right after.
    run_lock = RunLock(p["lock"], module.check_mode) if p["lock"] and state != "unstaged" else None

    def done(result: dict[str, Any], warnings: list[str]) -> None:
        """Release the run's lock (this host is done) and report."""
        if run_lock is not None:
            warnings = run_lock.warnings + warnings
            problem = run_lock.give_back()
            if problem:
                warnings.append(problem)
            result["lock"] = run_lock.report
        if rolled_back:
            result["rollback"] = rolled_back
        for warning in warnings:
            module.warn(warning)
        module.exit_json(**result)

    try:
        workload = workload_from_params(p)
        if run_lock is not None:
            run_lock.take()
    except SwitchError as exc:
        module.fail_json(msg=exc.msg, lock=run_lock.report if run_lock else {})
    if p["state"] == "live":
        try:
            kept = (
                keep_live(
                    p["app"],
                    Path(p["app_root"]),
                    p["host"] or socket.gethostname(),
                    check_mode=module.check_mode,
                )
                if web
                else {"live_color": "", "unit": "", "actions": [], "changed": False}
            )
            if workload is not None and not module.check_mode:
                where = f" on {host}"
                if workload.reconcile(Path(p["app_root"], "current").resolve(), where):
                    kept["changed"] = True
                kept["processes"] = workload.actions
        except SwitchError as exc:
            module.fail_json(msg=exc.msg)
        except UnitError as exc:
            module.fail_json(msg=exc.msg, processes=workload.actions if workload else [])
        done(kept, [])
    cfg = Config(
        app=p["app"],
        app_root=Path(p["app_root"]),
        release=release,
        # Not used with web=false (a worker-only host has no sockets, nginx or checks).
        socket_dir=Path(p["socket_dir"] or "/nonexistent"),
        socket_name=p["socket_name"],
        upstream_file=Path(p["upstream_file"] or "/nonexistent"),
        upstream_name=p["upstream_name"] or "",
        health_path=p["health_path"],
        health_host=p["health_host"] or "",
        check_argv=p["check_argv"] or [],
        retries=p["retries"],
        delay=p["delay"],
        drain_timeout=p["drain_timeout"],
        keep=p["keep"],
        venv_link=p["venv_link"],
        owner=p["owner"],
        group=p["group"],
        host=host,
        web=web,
    )
    switch = Switch(cfg, workload=workload, staged=p["staged"])
    if state in ("staged", "unstaged"):
        if module.check_mode:
            changed = state == "staged" or switch.runs_release(switch.new_color)
            module.exit_json(**{**switch.report.as_dict(), "changed": changed})
        try:
            report = switch.stage() if state == "staged" else switch.unstage()
        except SwitchError as exc:
            module.fail_json(msg=exc.msg, log=exc.log, **switch.report.as_dict())
        result = report.as_dict()
        if run_lock is not None:
            # Kept: the switch of this host releases it.
            result["lock"] = run_lock.report
        module.exit_json(**result)
    try:
        if module.check_mode:
            plan = switch.plan()
            for warning in switch.report.warnings:
                module.warn(warning)
            module.exit_json(**plan)
        report = switch.execute()
    except SwitchError as exc:
        module.fail_json(msg=exc.msg, log=exc.log, **switch.report.as_dict())
    except OSError as exc:
        module.fail_json(msg=f"release: switching failed: {exc}", **switch.report.as_dict())
    result = report.as_dict()
    if workload is not None:
        result["processes"] = workload.actions
    done(result, list(report.warnings))


if __name__ == "__main__":
    main()
