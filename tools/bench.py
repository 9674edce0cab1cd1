"""Benchmark: our stack against the naive baseline, under steady load (`make bench`).

  python -m tools.bench [--topology single|multi|all] [--rate 60] [--min-requests 3000]

For a topology it creates its own containers (djdeploy-bench-*, from the same
djdeploy-systemd image, on its own Docker network djdeploy-bench), prepared like `make demo`
(tools/demo.py: a `deploy` user with a fresh SSH key, the demo app's repository inside the
container), and measures as wall seconds:

  first converge     site.yml on fresh hosts
  no-op re-run       site.yml again (and how many tasks reported a change)
  code-only release  a new commit pushed to the repository the hosts fetch, playbooks/release.yml
  rollback           playbooks/rollback.yml
  release, no load   3 more code-only releases after the demo app's load windows, without the
                     probe (both topologies: their ratio without the load's CPU)
  requirements release (single only) a commit whose requirements changed, released once with
                     app_installer=pip and once with app_installer=uv (see below)

While releasing and rolling back it runs the load probe (tools/probe.py) through nginx over
HTTPS from this machine to the container's address on the bench network, at --rate
requests per second and for at least --min-requests requests per window, for the demo app
and for the same app booting in 2 s (DEMO_BOOT_DELAY=2 in app_env). Each window times
RUNS_PER_WINDOW (3) releases, each of a new commit, or 3 rollbacks, one after the other, ours
and the naive baseline's alike: the window's seconds and host work are their medians (a run of
a few seconds on a shared 2-core machine is noisy), runs_s lists each run's seconds, and the
probe's counts and latencies cover all of them. For reference it also measures a plain
`systemctl restart` of the live socket-activated instance.

The naive baseline (bench/naive.yml, bench/naive-release.yml) runs on another container
from the same image: gunicorn.service binding its own socket, the app checked out in place,
released with git pull, pip install, migrate, collectstatic and systemctl restart.

Results: .cache/bench/results.json (plus a summary on stdout; playbook logs in
.cache/bench/logs/). They are measurements, not assertions: the run fails only when a
playbook fails. Containers and the network are removed at the end, also on failure or ^C.

Topologies: `single` (one host: db and web). `multi` (djdeploy-bench-{db,web1,web2,lb}: nginx
on the lb host terminates TLS in front of the two web hosts, PostgreSQL on the db host, which
also serves the app's repository to the web hosts with git daemon, like molecule/cluster);
the probe goes through the lb. The naive baseline is single-host only: it runs with the
single topology. Without an `lb` group in the playbooks, multi is reported as not available.

Connection: Ansible reaches every bench host over real SSH, as the `deploy` user, at the
container's address on the bench network (port 22, no published ports: nothing collides with
other users' port mappings), in both topologies, as it would reach a real server; no docker
connection plugin, so what is timed includes SSH like a real deploy.

Requirements release (single topology, after the rest of ours, without the load probe: it
compares installers, not availability). The demo app installs from requirements.txt, so
app_installer decides between pip and `uv pip install`. A release whose requirements changed
builds a new venv from scratch (the venv is keyed by the requirements and the installer), so
what differs between the two runs is the installer and its cache. "Same cache options": each
installer has its cache in the build user's cache (shared/build-cache/pip, .../uv), left as
the earlier releases left it, and both start from the same contents, filled a minute or two
before (so neither has fresher index pages than the other): the starting requirements, and
not the new package. Two warm-up releases (unmeasured) fill them:

  0. a commit adding a comment line to requirements.txt (same packages, a new venv key),
     released with app_installer=pip (which also absorbs the switch back to the plain demo
     app's settings), then a code-only commit on top, released with app_installer=uv;
  1. a commit adding REQUIREMENTS_PACKAGE (pure Python, no dependencies, pinned) to
     requirements.txt, released with app_installer=pip;
  2. a rollback to the uv warm-up release (unmeasured), so both runs start from the same live
     release and requirements;
  3. a code-only commit on top of (1) (same requirements), released with app_installer=uv.

Both runs thus fetch the repository, build a venv of the same requirements from scratch and
download the same new package into a cache that does not have it; pip runs first. Each
records the run's wall seconds and, from the run's summary, the build's seconds, its install
step's and the installer (ours.requirements_release in results.json, and a line of the
summary; ratios uv against pip).

Every playbook (ours and the naive baseline) runs with the project's strategy, djdeploy_linear
(ansible.cfg): through Mitogen, pinned in requirements-dev.txt. --linear runs them with
DJDEPLOY_MITOGEN=0 (Ansible's own linear strategy) and writes results-linear.json instead:
the same measurements, to compare the two.

results.json keeps the topologies of an earlier run that this run does not measure (each with
the date and settings of the run that measured it, under `from_run`): `--topology multi` adds
its results beside the single ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import demo, images
from tools.probe import Probe, summary

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "bench"
PREFIX = "djdeploy-bench-"
NETWORK = "djdeploy-bench"
SERVER_NAME = "demo.bench.test"
SLOW_BOOT_ENV = {"DEMO_BOOT_DELAY": "2"}
# Added to the demo app's requirements for the requirements release: pure Python, no
# dependencies, one small wheel, pinned (the same package and version for every installer).
REQUIREMENTS_PACKAGE = "six==1.17.0"
INSTALLERS = ("pip", "uv")
# Added to requirements.txt before the warm-up releases: the same packages in a new venv.
# (Both go into the shell script of push_commit between single quotes: none in them.)
WARMUP = "# bench: warm-up of the installer caches"
REPO_PATH = "/srv/git/demo.git"  # on the first host (tools.demo.seed_repository)
NAIVE_APP_DIR = "/home/deploy/demo"
NAIVE_SINGLE_ONLY = "the naive baseline is single-host only: compare with the single topology"
LEAD_S = 3.0  # probe traffic before the action starts
# Releases (each of a new commit) and rollbacks timed in one load window, ours and naive: the
# window's seconds are their median (one run of a few seconds is noisy on a shared machine).
RUNS_PER_WINDOW = 3
TAIL_S = 3.0  # and after it ends (at least)


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


@dataclass
class Host:
    name: str
    groups: list[str]
    ip: str = ""


@dataclass
class Topology:
    name: str
    hosts: list[Host]
    # The host clients reach (nginx terminating TLS).
    front: str
    # Playbook groups this topology needs (the multi-host one needs the lb group).
    needs_groups: list[str] = field(default_factory=list)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


TOPOLOGIES: dict[str, Callable[[], Topology]] = {
    "single": lambda: Topology("single", [Host(f"{PREFIX}one", ["web", "db"])], f"{PREFIX}one"),
    "multi": lambda: Topology(
        "multi",
        [
            Host(f"{PREFIX}db", ["db"]),
            Host(f"{PREFIX}web1", ["web"]),
            Host(f"{PREFIX}web2", ["web"]),
            Host(f"{PREFIX}lb", ["lb"]),
        ],
        f"{PREFIX}lb",
        needs_groups=["lb"],
    ),
}


# --- containers and network --------------------------------------------------------------
def docker(*args: str, check: bool = True) -> str:
    return demo.sh("docker", *args, check=check, capture=True).stdout.strip()


def cleanup() -> None:
    """Remove every bench container and the bench network (only ours: by exact prefix)."""
    names = docker("ps", "-a", "--filter", f"name=^{PREFIX}", "--format", "{{.Names}}", check=False)
    for name in names.split():
        if name.startswith(PREFIX):
            docker("rm", "-f", name, check=False)
    if docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$", check=False):
        docker("network", "rm", NETWORK, check=False)


def network_subnet() -> str:
    docker("network", "create", NETWORK)
    return docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", NETWORK)


def host_state(host: Host) -> Path:
    path = STATE / "hosts" / host.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_host(host: Host, distro: str) -> None:
    demo.start_container(host.name, distro, ["--network", NETWORK])
    template = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
    host.ip = docker("inspect", "-f", template, host.name)
    demo.bootstrap_access(host.name, host_state(host), (host.ip, 22))


GIT_DAEMON_UNIT = "bench-git-daemon"


#: The db host's firewall rule for git daemon (9418), open to the app hosts' addresses.
GIT_DAEMON_RULE = {
    "name": "git-daemon",
    "port": 9418,
    "sources": "{{ groups['web'] | map('extract', hostvars, 'app_private_address')"
    " | map('regex_replace', '$', '/32') | list }}",
}


def serve_repository(host: Host) -> str:
    """git daemon on ``host`` (the db host), read-only, for the other hosts to fetch.

    git is not in the image: the base role installs it on every host during the first
    converge, before site.yml's release step fetches. A path unit starts the daemon as soon
    as /usr/bin/git exists. It runs as deploy, who owns the repository (no safe.directory).
    Returns the repository's URL for the other hosts.
    """
    units = {
        f"{GIT_DAEMON_UNIT}.path": "[Path]\nPathExists=/usr/bin/git\n"
        "[Install]\nWantedBy=multi-user.target\n",
        f"{GIT_DAEMON_UNIT}.service": "[Unit]\nDescription=git daemon (bench repository)\n"
        "[Service]\nUser=deploy\nRestart=on-failure\nExecStart=/usr/bin/git daemon "
        "--reuseaddr --export-all --informative-errors --base-path=/srv/git /srv/git\n",
    }
    script = "set -eu; " + "; ".join(
        f"printf '{text}' > /etc/systemd/system/{unit}" for unit, text in units.items()
    )
    script += f"; systemctl daemon-reload; systemctl enable --now {GIT_DAEMON_UNIT}.path"
    demo.docker_exec("sh", "-c", script, name=host.name)
    return f"git://{host.ip}/demo.git"


def push_commit(container: str, message: str, requirement: str = "") -> None:
    """A code-only change (a comment in a view), pushed to the repository the hosts fetch;
    with ``requirement``, that line is added to requirements.txt too (when it lacks it)."""
    add = (
        f"grep -qxF '{requirement}' requirements.txt || echo '{requirement}' >> requirements.txt; "
        if requirement
        else ""
    )
    script = (
        "set -eu; tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT; "
        f'git clone -q {REPO_PATH} "$tmp/w"; cd "$tmp/w"; '
        f"echo '# {message}' >> greetings/views.py; {add}"
        "git -c user.name=bench -c user.email=bench@example.invalid commit -qam "
        f"'{message}'; git push -q origin HEAD:main"
    )
    demo.sh("docker", "exec", "-u", "deploy", container, "sh", "-c", script)


# --- inventories and playbooks -----------------------------------------------------------
def write_inventory(
    topo: Topology, where: Path, app_env: dict[str, str], extra: dict[str, Any]
) -> Path:
    """hosts.yml and group_vars like inventories/local, for the bench containers.

    JSON is YAML: the files are written with json.dumps (no YAML library needed here).
    """
    inventory = where / "inventory"
    shutil.rmtree(inventory, ignore_errors=True)
    group_vars = inventory / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    (group_vars / "00-shared.yml").symlink_to(ROOT / "group_vars" / "all" / "main.yml")
    state = host_state(topo.hosts[0])
    app = {
        "app_name": "demo",
        "app_server_names": [SERVER_NAME],
        "app_repo": REPO_PATH,
        "app_ref": "main",
        "app_wsgi_module": "demo.wsgi:application",
        "app_env": app_env,
        "app_tls_mode": "selfsigned",
        "app_keep_releases": 5,
        "app_check_deploy_accept": ["greetings.W001"],
        **extra,
    }
    (group_vars / "main.yml").write_text(json.dumps(app, indent=2) + "\n")
    if len(topo.hosts) > 1:
        # The db host serves the repository with git daemon (serve_repository): its firewall
        # (the hardening role) accepts git's port from the app hosts, as in molecule/cluster.
        (inventory / "group_vars" / "db.yml").write_text(
            json.dumps({"app_firewall_allow": [GIT_DAEMON_RULE]}, indent=2) + "\n"
        )
    groups: dict[str, Any] = {}
    for host in topo.hosts:
        for group in host.groups:
            entry = {
                "ansible_host": host.ip,
                "ansible_ssh_private_key_file": str(host_state(host) / "id_ed25519"),
            }
            if len(topo.hosts) > 1:
                # The address the other hosts reach it at (like inventories/prod).
                entry["app_private_address"] = host.ip
            groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = entry
    hosts = {
        "all": {
            "vars": {
                "ansible_user": "deploy",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=accept-new "
                f"-o UserKnownHostsFile={state / 'known_hosts'}",
            },
            "children": groups,
        }
    }
    (inventory / "hosts.yml").write_text(json.dumps(hosts, indent=2) + "\n")
    return inventory


@dataclass
class Run:
    seconds: float
    changed: int
    # Seconds of the hosts' own switch work, from the switch module's reports in the run's
    # summary (None when the run switched no host): the floor under the run's total.
    host_work: float | None = None
    # The build of each host that built in the run, from the summary (build_work).
    builds: list[dict[str, Any]] = field(default_factory=list)
    # The run's report (playbooks/summary.yml, djdeploy_report_file), when it wrote one.
    report: dict[str, Any] = field(default_factory=dict)


HOST_WORK = re.compile(r" host work ([0-9.]+) s ")
BUILD_WORK = re.compile(
    r", build ([0-9.]+) s(?: \((?:install ([0-9.]+) s with ([\w?-]+)|venv reused)\))?"
)


def summary_text(text: str) -> str:
    """The run's summary, on one line: the output's YAML folds long lines at spaces."""
    # From the summary play's first task (the printed summary; the JSON report's task, when the
    # run writes one, comes after it) to the recap.
    printed = text.partition("TASK [Summary |")[2].partition("\nPLAY RECAP")[0]
    return " ".join(printed.split())


def host_work(text: str) -> float | None:
    """The sum of the hosts' switch work printed by the release summary (None: no switch)."""
    found = [float(x) for x in HOST_WORK.findall(summary_text(text))]
    return round(sum(found), 2) if found else None


def describe_build(build: dict[str, Any]) -> str:
    if build.get("install_s") is None:
        return f"build {build['build_s']} s (no install)"
    return f"build {build['build_s']} s (install {build['install_s']} s with {build['installer']})"


def build_work(text: str) -> list[dict[str, Any]]:
    """Each host's build printed by the release summary (the build module's report): its
    seconds, its install step's and the installer (both None: the venv was reused)."""
    return [
        {
            "build_s": float(build),
            "install_s": float(install) if install else None,
            "installer": installer or None,
        }
        for build, install, installer in BUILD_WORK.findall(summary_text(text))
    ]


class BenchError(RuntimeError):
    pass


_step = 0
# Extra environment of every playbook run (--linear turns Mitogen off).
STRATEGY_ENV: dict[str, str] = {}


def strategy_env(linear: bool) -> dict[str, str]:
    """The environment of the strategy measured: djdeploy_linear through Mitogen (which must be
    installed, or the run would silently measure plain linear), or with Mitogen turned off."""
    if linear:
        return {"DJDEPLOY_MITOGEN": "0"}
    if importlib.util.find_spec("ansible_mitogen") is None:
        raise BenchError("the bench measures Mitogen: make setup installs it (or pass --linear)")
    return {"DJDEPLOY_MITOGEN": "1"}


def playbook(inventory: Path, path: str, *args: str, secrets: Path, report: bool = False) -> Run:
    """Run a playbook like a user would; its output goes to .cache/bench/logs/. With report,
    the run also writes its JSON report there (djdeploy_report_file) and Run.report holds it."""
    global _step
    _step += 1
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"{_step:02d}-{Path(path).stem}.log"
    report_file = logfile.with_suffix(".json")
    report_file.unlink(missing_ok=True)
    if report:
        args = (*args, "-e", f"djdeploy_report_file={report_file}")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(STATE / "facts"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(STATE / "cp"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        **STRATEGY_ENV,
    )
    cmd = ["ansible-playbook", "-i", str(inventory), path, "-e", f"@{secrets}", *args]
    log(f"{' '.join(cmd[:4])} {' '.join(args)} (log: {logfile.relative_to(ROOT)})")
    began = time.monotonic()
    with logfile.open("w") as out:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    seconds = round(time.monotonic() - began, 1)
    text = logfile.read_text()
    if proc.returncode != 0:
        raise BenchError(f"{path} failed (rc {proc.returncode}); see {logfile}")
    recap = text.rpartition("PLAY RECAP")[2]
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", recap))
    work = host_work(text)
    builds = build_work(text)
    log(
        f"  {seconds} s, changed={changed}"
        + (f", host work {work} s" if work is not None else "")
        + "".join(f", {describe_build(b)}" for b in builds)
    )
    data = json.loads(report_file.read_text()) if report and report_file.exists() else {}
    return Run(seconds, changed, work, builds, data)


def median_run(runs: list[Run]) -> dict[str, Any]:
    """What a window keeps of its runs: the median seconds and host work (the floor), and the
    seconds of each run."""
    works = [r.host_work for r in runs if r.host_work is not None]
    return {
        "seconds": round(statistics.median(r.seconds for r in runs), 2),
        "runs_s": [r.seconds for r in runs],
        "host_work_s": round(statistics.median(works), 2) if works else None,
    }


def merged_reports(runs: list[Run]) -> dict[str, Any]:
    """The runs' reports as one, each host once per run (``<host>#<n>``), for
    slow_requests_by_step: a slow request may fall in any run of the window."""
    hosts: dict[str, Any] = {}
    for n, run in enumerate(runs, 1):
        for host, facts in (run.report.get("hosts") or {}).items():
            hosts[f"{host}#{n}" if len(runs) > 1 else host] = facts
    return {"hosts": hosts}


def slow_requests_by_step(probe: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    """The probe's slowest requests, each with the switch steps (host:step) its time overlaps.

    A request spans from when it was due to that plus its latency (its ``at_epoch`` and ``ms``
    in the probe's ``slowest``); a step from its ``at`` for its ``seconds`` (the switch
    module's report, per host, in the run's report). "none" when no switch step overlaps (the
    slow request came during the build, the migrations, or outside the run)."""
    steps = [
        (host, step)
        for host, facts in (run.get("hosts") or {}).items()
        for step in (facts.get("switch") or {}).get("steps") or []
        if "at" in step
    ]
    found = []
    for request in probe.get("slowest") or []:
        begin = float(request["at_epoch"])
        end = begin + float(request["ms"]) / 1000
        during = [
            f"{host}:{step['step']}"
            for host, step in steps
            if begin <= float(step["at"]) + float(step["seconds"]) and float(step["at"]) <= end
        ]
        found.append({"ms": request["ms"], "at_s": request["at_s"], "during": during or ["none"]})
    return found


# --- measurements under load -------------------------------------------------------------
@dataclass
class Load:
    rate: float
    min_requests: int
    max_seconds: float
    subnet: str

    def probe(self, ip: str, cacert: Path, max_requests: int) -> Probe:
        return Probe(
            f"https://{SERVER_NAME}/",
            connect=f"{ip}:443",
            cacert=str(cacert),
            rate=self.rate,
            max_requests=max_requests,
            max_seconds=self.max_seconds,
            allowed_networks=[self.subnet],
        )

    def during(
        self, ip: str, cacert: Path, action: Callable[[], float], min_requests: int | None = None
    ) -> dict[str, Any]:
        """Steady traffic from LEAD_S before the action to at least TAIL_S after it, and at
        least min_requests requests; the report says when the action ran. ``action`` returns
        the seconds to report (the median of its runs, when it times several)."""
        wanted = min_requests or self.min_requests
        load_before = os.getloadavg()[0]
        running = self.probe(ip, cacert, max_requests=int(self.rate * self.max_seconds)).start()
        try:
            time.sleep(LEAD_S)
            start = time.monotonic()
            seconds = action()
            end = time.monotonic()
            time.sleep(TAIL_S)
            while running.sent < wanted and running.running:
                time.sleep(0.2)
        finally:
            report = running.stop()
        began = running.started_at
        report["action_window_s"] = [round(start - began, 2), round(end - began, 2)]
        log(f"  load: {summary(report)}")
        # The machine is shared: its 1-minute load average says how contended the run was.
        loadavg = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        return {"seconds": seconds, "loadavg_1m": loadavg, "probe": report}

    def repeated(self, ip: str, cacert: Path, run: Callable[[int], Run]) -> dict[str, Any]:
        """RUNS_PER_WINDOW runs (``run(n)``, n from 0) in one window (``during``): the window's
        seconds and host work are their medians, ``runs_s`` each run's seconds, and
        ``slowest_during`` lines the slowest requests up with every run's switch steps."""
        runs: list[Run] = []

        def action() -> float:
            runs.extend(run(n) for n in range(RUNS_PER_WINDOW))
            return float(median_run(runs)["seconds"])

        window = self.during(ip, cacert, action)
        window.update(median_run(runs))
        window["slowest_during"] = slow_requests_by_step(window["probe"], merged_reports(runs))
        return window

    def check(self, ip: str, cacert: Path) -> None:
        """A short warm-up: the site answers 200 through nginx before any measurement."""
        report = self.probe(ip, cacert, max_requests=20).run()
        if report["failed"]:
            raise BenchError(f"warm-up requests failed: {report['status']} {report['errors']}")


def fetch(container: str, path: str, dest: Path) -> Path:
    docker("cp", f"{container}:{path}", str(dest))
    return dest


def topology_vars(topo: Topology, repo: str) -> dict[str, Any]:
    """Group variables beyond the app's for a topology: none on one host; with a separate db
    host (like molecule/cluster), PostgreSQL listening on its address for the web hosts only,
    and the repository served from it."""
    if len(topo.hosts) == 1:
        return {}
    db = next(h for h in topo.hosts if "db" in h.groups)
    return {
        "app_repo": repo,
        "app_db_host": db.ip,
        "app_db_allowed_networks": [f"{h.ip}/32" for h in topo.hosts if "web" in h.groups],
        "postgres_listen_addresses": f"localhost,{db.ip}",
    }


def measure_ours(topo: Topology, load: Load, results: dict[str, Any], repo: str) -> None:
    """Fills ``results`` as it goes (a failure keeps what was measured)."""
    state = host_state(topo.hosts[0])
    secrets = demo.secrets_file(state)
    front = topo.host(topo.front)
    extra = topology_vars(topo, repo)
    inventory = write_inventory(topo, state, {}, extra)
    web = [h for h in topo.hosts if "web" in h.groups]
    results["hosts"] = {h.name: h.groups for h in topo.hosts}

    def release(app: str, n: int) -> Run:
        # A code-only change: a new commit for each release of the window.
        push_commit(topo.hosts[0].name, f"{app} {n + 1}")
        return playbook(inventory, "playbooks/release.yml", secrets=secrets, report=True)

    def rollback(n: int) -> Run:
        return playbook(inventory, "playbooks/rollback.yml", secrets=secrets, report=True)

    def plain_restart() -> float:
        began = time.monotonic()
        for host in web:
            color = docker("exec", host.name, "cat", "/srv/demo/live-color")
            docker("exec", host.name, "systemctl", "restart", f"demo@{color}.service")
        return round(time.monotonic() - began, 1)

    timings: dict[str, Any] = results.setdefault("timings_s", {})
    timings["first_converge"] = playbook(inventory, "site.yml", secrets=secrets).seconds
    noop = playbook(inventory, "site.yml", secrets=secrets)
    timings["noop_rerun"], timings["noop_rerun_changed"] = noop.seconds, noop.changed
    cacert = fetch(front.name, "/etc/ssl/djdeploy/demo/fullchain.pem", state / "ca.pem")
    load.check(front.ip, cacert)
    for app, env in (("demo", {}), ("demo_boot2s", SLOW_BOOT_ENV)):
        app_results: dict[str, Any] = results.setdefault(app, {"app_env": env})
        if env:
            inventory = write_inventory(topo, state, env, extra)
            log(f"{topo.name}: ours, the app now boots in 2 s (app_env {env})")
            app_results["config_release_s"] = playbook(
                inventory, "playbooks/release.yml", secrets=secrets
            ).seconds
        log(f"{topo.name}: ours, {app}: {RUNS_PER_WINDOW} code-only releases under load")
        app_results["release"] = load.repeated(front.ip, cacert, functools.partial(release, app))
        log(f"{topo.name}: ours, {app}: {RUNS_PER_WINDOW} rollbacks under load")
        app_results["rollback"] = load.repeated(front.ip, cacert, rollback)
        log(f"{topo.name}: ours, {app}: plain restart of the socket-activated instance (reference)")
        app_results["plain_restart"] = load.during(
            front.ip, cacert, plain_restart, min_requests=int(load.rate * 12)
        )
        if app == "demo":
            timings["code_release"] = app_results["release"]["seconds"]
            timings["rollback"] = app_results["rollback"]["seconds"]
            # The same releases without the probe: the topologies' ratio without the load's
            # CPU, which on this one machine the multi-host release shares with four hosts.
            log(f"{topo.name}: ours, demo: {RUNS_PER_WINDOW} code-only releases without load")
            app_results["release_unloaded"] = median_run(
                [release("demo, no load", n) for n in range(RUNS_PER_WINDOW)]
            )
    if topo.name == "single":
        inventory = write_inventory(topo, state, {}, extra)
        measure_requirements_release(
            inventory, secrets, topo.hosts[0].name, results.setdefault("requirements_release", {})
        )


def installer_run(run: Run, installer: str) -> dict[str, Any]:
    """What results.json keeps of a release with one installer: the run's seconds and its
    (single) host's build from the summary."""
    build = run.builds[0] if run.builds else {}
    return {
        "app_installer": installer,
        "seconds": run.seconds,
        "build_s": build.get("build_s"),
        "install_s": build.get("install_s"),
        "installer": build.get("installer"),
        "host_work_s": run.host_work,
    }


def measure_requirements_release(
    inventory: Path, secrets: Path, container: str, out: dict[str, Any]
) -> None:
    """A release whose requirements changed, with pip and with uv (module docstring). Fills
    ``out`` as it goes (a failure keeps what was measured)."""
    out["package"] = REQUIREMENTS_PACKAGE
    out["caches"] = (
        "each installer's own cache in the build user's cache as its warm-up release left it:"
        " the starting requirements, not the new package"
    )

    def release(installer: str) -> Run:
        return playbook(
            inventory, "playbooks/release.yml", "-e", f"app_installer={installer}", secrets=secrets
        )

    for installer in INSTALLERS:
        log(f"single: ours, requirements release: warm-up of {installer}'s cache")
        # The first warm-up changes the file (a comment: same packages, a new venv key), the
        # second is code-only: each builds a venv of the starting requirements.
        push_commit(container, f"bench {installer} warm-up", WARMUP if installer == "pip" else "")
        out[f"{installer}_warmup"] = installer_run(release(installer), installer)
    for n, installer in enumerate(INSTALLERS):
        if n:
            log("single: ours, requirements release: rollback to the last warm-up release")
            playbook(inventory, "playbooks/rollback.yml", secrets=secrets)
        log(f"single: ours, requirements release (+{REQUIREMENTS_PACKAGE}) with {installer}")
        push_commit(container, f"bench requirements {installer}", REQUIREMENTS_PACKAGE)
        out[installer] = installer_run(release(installer), installer)


def measure_naive(host: Host, load: Load, results: dict[str, Any]) -> None:
    """Fills ``results`` as it goes (a failure keeps what was measured)."""
    state = host_state(host)
    secrets = demo.secrets_file(state)
    topo = Topology("naive", [host], host.name)
    naive_vars = {
        "naive_app_dir": NAIVE_APP_DIR,
        "naive_static_root": "/var/www/demo/static",
    }
    inventory = write_inventory(topo, state, {}, naive_vars)

    def release(app: str, n: int) -> Run:
        push_commit(host.name, f"naive {app} {n + 1}")
        return playbook(inventory, "bench/naive-release.yml", secrets=secrets)

    def rollback(n: int) -> Run:
        rollback_args = ("-e", "naive_rollback=true")
        return playbook(inventory, "bench/naive-release.yml", *rollback_args, secrets=secrets)

    timings: dict[str, Any] = results.setdefault("timings_s", {})
    timings["first_converge"] = playbook(inventory, "bench/naive.yml", secrets=secrets).seconds
    cacert = fetch(host.name, "/etc/ssl/certs/naive.crt", state / "ca.pem")
    load.check(host.ip, cacert)
    for app, env in (("demo", {}), ("demo_boot2s", SLOW_BOOT_ENV)):
        app_results: dict[str, Any] = results.setdefault(app, {"app_env": env})
        if env:
            inventory = write_inventory(topo, state, env, naive_vars)
            log(f"naive: the app now boots in 2 s (app_env {env})")
            app_results["config_release_s"] = playbook(
                inventory, "bench/naive.yml", secrets=secrets
            ).seconds
        log(f"naive, {app}: {RUNS_PER_WINDOW} releases in place (each of a new commit) under load")
        app_results["release"] = load.repeated(host.ip, cacert, functools.partial(release, app))
        log(f"naive, {app}: {RUNS_PER_WINDOW} rollbacks (git reset --hard HEAD~1) under load")
        app_results["rollback"] = load.repeated(host.ip, cacert, rollback)
        if app == "demo":
            timings["code_release"] = app_results["release"]["seconds"]
            timings["rollback"] = app_results["rollback"]["seconds"]


def playbook_groups() -> set[str]:
    """Groups the project's playbooks target (`hosts:` lines)."""
    groups: set[str] = set()
    for path in [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]:
        for match in re.finditer(r"^\s*hosts:\s*(.+)$", path.read_text(), re.MULTILINE):
            groups.update(g.strip(" '\"") for g in re.split(r"[:,&!]", match.group(1)))
    return groups


def run_topology(name: str, load_args: argparse.Namespace, distro: str) -> dict[str, Any]:
    topo = TOPOLOGIES[name]()
    missing = [g for g in topo.needs_groups if g not in playbook_groups()]
    if missing:
        reason = (
            f"not available in this branch: the playbooks target no {', '.join(missing)} group "
            "(the load-balancer topology is not merged yet)"
        )
        log(f"{name}: {reason}")
        return {"available": False, "reason": reason}
    cleanup()
    subnet = network_subnet()
    load = Load(load_args.rate, load_args.min_requests, load_args.max_seconds, subnet)
    began = time.monotonic()
    result: dict[str, Any] = {"available": True, "subnet": subnet}
    if name != "single":
        result["naive"] = {"note": NAIVE_SINGLE_ONLY}
        log(f"{name}: {NAIVE_SINGLE_ONLY}")
    try:
        for host in topo.hosts:
            log(f"{name}: starting {host.name} ({distro}, groups {host.groups})")
            start_host(host, distro)
        # The repository every host fetches lives on the first host (the db host in multi,
        # served to the web hosts by git daemon).
        demo.seed_repository(topo.hosts[0].name)
        repo = serve_repository(topo.hosts[0]) if len(topo.hosts) > 1 else REPO_PATH
        measure_ours(topo, load, result.setdefault("ours", {}), repo)
        if name == "single" and not load_args.skip_naive:
            naive = Host(f"{PREFIX}naive", ["web", "db"])
            log(f"naive baseline: starting {naive.name}")
            start_host(naive, distro)
            demo.seed_repository(naive.name)
            measure_naive(naive, load, result.setdefault("naive", {}))
    except (BenchError, subprocess.CalledProcessError) as exc:
        log(f"{name}: {exc}")
        result["error"] = str(exc)
    finally:
        result["wall_s"] = round(time.monotonic() - began, 1)
        cleanup()
    return result


# --- report ------------------------------------------------------------------------------
def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    header = f"{'topology':8} {'stack':6} {'app':12} {'action':14} {'seconds':>7} "
    header += f"{'sent':>6} {'failed':>6} {'fail%':>6} {'p50':>7} {'p99':>7} {'max ms':>8}"
    header += f" {'host work':>9}"
    lines.append(header)
    for topo, res in results["topologies"].items():
        if not res.get("available"):
            lines.append(f"{topo:8} {res['reason']}")
            continue
        if "error" in res:
            lines.append(f"{topo:8} FAILED (partial results below): {res['error']}")
        for stack in ("ours", "naive"):
            for app in ("demo", "demo_boot2s"):
                for action in ("release", "rollback", "plain_restart"):
                    entry = res.get(stack, {}).get(app, {}).get(action)
                    if not entry:
                        continue
                    p = entry["probe"]
                    lat = p["latency_ms"]
                    lines.append(
                        f"{topo:8} {stack:6} {app:12} {action:14} {entry['seconds']:7} "
                        f"{p['sent']:6} {p['failed']:6} {p['failed_pct']:6} {lat['p50']:7} "
                        f"{lat['p99']:7} {lat['max']:8} {entry.get('host_work_s') or '':>9}"
                    )
        quiet = res.get("ours", {}).get("demo", {}).get("release_unloaded")
        if quiet:
            lines.append(
                f"{topo:8} {'ours':6} {'demo':12} {'release':14} {quiet['seconds']:7} "
                f"no load: runs {quiet['runs_s']}, host work {quiet.get('host_work_s')} s"
            )
        lines += requirements_lines(topo, res.get("ours", {}).get("requirements_release") or {})
        for stack in ("ours", "naive"):
            timings = res.get(stack, {}).get("timings_s")
            if timings:
                lines.append(f"{topo:8} {stack:6} timings (s): {json.dumps(timings)}")
            note = res.get(stack, {}).get("note")
            if note:
                lines.append(f"{topo:8} {stack:6} {note}")
        if "from_run" in res:
            lines.append(f"{topo:8} (kept from the run of {res['from_run']['date']})")
    return lines


def requirements_lines(topo: str, entry: dict[str, Any]) -> list[str]:
    """Rows of the summary table for the requirements release, one per installer (no probe:
    the build and install seconds stand where the probe's columns are)."""
    lines = []
    for installer in INSTALLERS:
        run = entry.get(installer)
        if not run:
            continue
        action = f"reqs ({installer})"
        install = run.get("install_s")
        build = (
            f"build {run.get('build_s')} s, install {install} s with {run.get('installer')}"
            if install is not None
            else "no install reported (venv reused?)"
        )
        lines.append(
            f"{topo:8} {'ours':6} {'demo':12} {action:14} {run['seconds']:7} "
            f"no load: {build} (+{entry.get('package', '?')})"
        )
    return lines


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The issue's targets as ratios of the same run: release and rollback against the naive
    baseline, the no-op site.yml against the first converge, multi-host against single (the
    releases under load, and the ones without: ``_unloaded``), and the requirements release
    (and its install step) with uv against pip."""
    out: dict[str, float] = {}
    topos = results.get("topologies", {})
    single = topos.get("single", {})
    ours = single.get("ours", {})
    naive = single.get("naive", {})
    for action in ("release", "rollback"):
        mine = ours.get("demo", {}).get(action, {}).get("seconds")
        base = naive.get("demo", {}).get(action, {}).get("seconds")
        if mine and base:
            out[f"{action}_vs_naive"] = round(mine / base, 2)
    timings = ours.get("timings_s", {})
    if timings.get("noop_rerun") and timings.get("first_converge"):
        out["noop_vs_first_converge"] = round(timings["noop_rerun"] / timings["first_converge"], 3)
    reqs = ours.get("requirements_release", {})
    pip, uv = reqs.get("pip") or {}, reqs.get("uv") or {}
    for key, name in (("seconds", "requirements_release"), ("install_s", "install")):
        if pip.get(key) and uv.get(key):
            out[f"{name}_uv_vs_pip"] = round(uv[key] / pip[key], 2)
    multi = topos.get("multi", {}).get("ours", {}).get("demo", {})
    for action, name in (("release", ""), ("release_unloaded", "_unloaded")):
        theirs = multi.get(action, {}).get("seconds")
        mine = ours.get("demo", {}).get(action, {}).get("seconds")
        if theirs and mine:
            out[f"multi_release_vs_single{name}"] = round(theirs / mine, 2)
    return out


def earlier_results(path: Path) -> dict[str, Any]:
    """The previous run's results.json, if readable (its topologies may be kept)."""
    try:
        earlier: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier.get("topologies"), dict) else {}


RUN_KEYS = ("date", "machine", "distro", "probe")


def keep_earlier(results: dict[str, Any], earlier: dict[str, Any]) -> None:
    """Topologies measured by an earlier run and not by this one stay in the results, each
    with the date and settings of the run that measured it (``from_run``)."""
    for name, res in earlier.get("topologies", {}).items():
        if name in results["topologies"] or not res.get("available"):
            continue
        kept = dict(res)
        kept.setdefault("from_run", {k: earlier[k] for k in RUN_KEYS if k in earlier})
        results["topologies"][name] = kept
    order = list(TOPOLOGIES)
    results["topologies"] = dict(
        sorted(results["topologies"].items(), key=lambda item: order.index(item[0]))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--topology", choices=["single", "multi", "all"], default="all")
    parser.add_argument("--distro", default="debian12", choices=sorted(images.DISTROS))
    parser.add_argument("--rate", type=float, default=60.0, help="probe requests per second")
    parser.add_argument("--min-requests", type=int, default=3000, help="per measured window")
    parser.add_argument("--max-seconds", type=float, default=600, help="hard bound per window")
    parser.add_argument("--skip-naive", action="store_true", help="only our stack")
    parser.add_argument(
        "--linear", action="store_true", help="Mitogen off: Ansible's linear (results-linear.json)"
    )
    args = parser.parse_args(argv)
    STRATEGY_ENV.update(strategy_env(args.linear))

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    out = STATE / ("results-linear.json" if args.linear else "results.json")
    other = STATE / ("results.json" if args.linear else "results-linear.json")
    earlier = earlier_results(out)
    # The other strategy's results survive this run (they are compared side by side).
    kept_other = other.read_text() if other.exists() else None
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    if kept_other is not None:
        other.write_text(kept_other)
    names = ["single", "multi"] if args.topology == "all" else [args.topology]
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "os": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "distro": args.distro,
        "ansible_strategy": "linear" if args.linear else "djdeploy_linear (Mitogen)",
        "probe": {
            "url": f"https://{SERVER_NAME}/",
            "rate": args.rate,
            "min_requests_per_window": args.min_requests,
            "lead_s": LEAD_S,
            "tail_s": TAIL_S,
        },
        "topologies": {},
    }
    status = 0
    try:
        for name in names:
            results["topologies"][name] = run_topology(name, args, args.distro)
            if "error" in results["topologies"][name]:
                status = 1
    except KeyboardInterrupt:
        log("interrupted; containers removed")
        status = 130
    finally:
        keep_earlier(results, earlier)
        results["ratios"] = ratios(results)
        results["summary"] = [*summary_lines(results), f"ratios: {json.dumps(results['ratios'])}"]
        out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(results["summary"]))
    log(f"results: {out.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
