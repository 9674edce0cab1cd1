"""Run the whole test suite: lint, unit tests, then every Molecule scenario on each distro.

Prints the time each step took, what failed in a failed step (a digest of its log), and ends
with one line: ``N passed, N failed``.

Usage: python -m tools.run_tests [--distro debian12 ...] [--scenario base ...] [--skip-lint]
                                 [--jobs N]
Environment: DISTROS / SCENARIOS (space separated) narrow the run like the options do;
TEST_JOBS sets --jobs.

Scenario runs go side by side (--jobs, default 3), the longest first (WEIGHTS): every
scenario+distro has its own containers, docker network and Molecule state directory. One run
keeps about one core busy (Ansible on the controller and the app in its containers, about
half each, with waits between), so on two cores two runs at a time still left some of them
idle. Three at a time, with lint beside them, kept 1.9 of 2 cores busy: 43 minutes for the
suite against 48 (each run gets slower, the sum of their work does not). Each scenario waits
only for its own distro's test image.

A scenario may list the distros of the full run in molecule/<scenario>/DISTROS (one per line):
the multi-host cluster scenario runs on Debian 12 only there (its roles run on both distros in
the other scenarios); `make molecule S=cluster DISTRO=debian13` runs it on 13.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tools.images import DISTROS

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".cache" / "test-logs"
_PRINT = threading.Lock()


def say(text: str) -> None:
    with _PRINT:
        print(text, flush=True)


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    log: Path | None = None


def scenarios() -> list[str]:
    """Molecule scenarios in run order (molecule/<name>/molecule.yml)."""
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    order_file = ROOT / "molecule" / "ORDER"
    if order_file.exists():
        order = [line.strip() for line in order_file.read_text().splitlines() if line.strip()]
        order = [name for name in order if not name.startswith("#")]
        return [n for n in order if n in found] + [n for n in found if n not in order]
    return found


# Rough minutes per scenario and distro, to start the longest first.
WEIGHTS = {"cluster": 28, "stack": 25, "certbot": 8, "nginx": 5, "postgres": 3, "python": 3}


def scenario_distros(scenario: str, distros: list[str]) -> list[str]:
    """The distros a full run tests the scenario on (molecule/<scenario>/DISTROS, if any)."""
    listing = ROOT / "molecule" / scenario / "DISTROS"
    if not listing.exists():
        return distros
    lines = [line.split("#", 1)[0].strip() for line in listing.read_text().splitlines()]
    return [distro for distro in distros if distro in lines]


def molecule_env(scenario: str, distro: str) -> dict[str, str]:
    """Environment of one scenario run: its distro and its own state directory, so the
    same scenario on two distros never shares (or clobbers) Molecule's state."""
    state = ROOT / ".cache" / "molecule" / f"{scenario}-{distro}"
    return dict(
        os.environ,
        MOLECULE_DISTRO=distro,
        MOLECULE_EPHEMERAL_DIRECTORY=str(state),
        PY_COLORS="0",
        ANSIBLE_FORCE_COLOR="0",
    )


# Lines of a step's log that get the time since the step started, so a log shows where a
# scenario spends its time: Molecule's phases and Ansible's tasks and plays.
_TIMED = ("TASK [", "PLAY [", "RUNNING HANDLER [", "PLAY RECAP", "INFO     [")


def copy_timed(stream: IO[str], handle: IO[str], start: float) -> None:
    """Copy a step's output into its log, stamping the phase, play and task lines with the
    seconds since ``start`` (``[+  12.3s] TASK [...]``); other lines stay as they are."""
    for line in stream:
        if line.startswith(_TIMED):
            line = f"[+{time.monotonic() - start:7.1f}s] {line}"
        handle.write(line)


def run_step(name: str, cmd: list[str], env: dict[str, str] | None = None) -> Step:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / (name.replace(" ", "_").replace("/", "_") + ".log")
    say(f"==> {name}: {' '.join(cmd)} (log: {log.relative_to(ROOT)})")
    start = time.monotonic()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        copy_timed(proc.stdout, handle, start)
        returncode = proc.wait()
    seconds = time.monotonic() - start
    ok = returncode == 0
    report = f"<== {name}: {'PASS' if ok else 'FAIL'} in {seconds:.0f}s"
    if not ok:
        tail = log.read_text(errors="replace").splitlines()[-60:]
        report += "\n" + "\n".join(f"    | {line}" for line in tail)
    say(report)
    return Step(name, ok, seconds, log)


def failure_digest(log: Path, limit: int = 12, width: int = 300) -> list[str]:
    """The few lines of a failed step's log that name what failed, for the run's last
    screen (a CI keeps only the end of the output; the full log stays in .cache/test-logs).

    pytest's ``FAILED``/``ERROR`` summary lines come first, then Ansible's fatal results and
    Molecule's errors, then assertion lines, each cut to ``width`` characters. Ansible's
    ``FAILED - RETRYING`` lines (an ``until`` loop still waiting, printed by every create and
    destroy) name no failure and are left out."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if not line.startswith("FAILED - RETRYING")
    ]
    picked: list[str] = []
    for marks in (("FAILED ", "ERROR "), ("fatal: [", "failed: [", "CRITICAL "), ("E   ",)):
        for line in lines:
            if line.startswith(marks) and line not in picked:
                picked.append(line)
    return [line[:width] for line in picked[:limit]]


@dataclass
class Job:
    """One command of the run: its step name, argv and environment (None: the runner's)."""

    name: str
    cmd: list[str]
    env: dict[str, str] | None = None


Runner = Callable[[Job], Step]


def run_job(job: Job) -> Step:
    return run_step(job.name, job.cmd, job.env)


def run_all(
    checks: list[Job],
    images: dict[str, Job],
    scenario_runs: list[tuple[str, Job]],
    jobs: int,
    runner: Runner = run_job,
) -> list[Step]:
    """Run the whole suite with nothing waiting that need not wait.

    Three things go side by side from the start: the checks (lint, then unit tests), the test
    images (one distro after another), and the scenario runs (``jobs`` at a time, in the
    given order). A scenario run waits for its own distro's image only, so the longest
    Debian 12 scenarios start while the Debian 13 image is still being built and while lint
    runs. A scenario whose image failed is not run (the image's step carries the failure).

    Returns the steps in a stable order: checks, images, then scenario runs as given."""
    ready = {distro: threading.Event() for distro in images}
    built: dict[str, bool] = {}

    def build_images() -> list[Step]:
        done: list[Step] = []
        try:
            for distro, job in images.items():
                step = runner(job)
                built[distro] = step.ok
                ready[distro].set()
                done.append(step)
        finally:
            for event in ready.values():
                event.set()  # a crash above must not leave a scenario waiting forever
        return done

    def run_scenario(distro: str, job: Job) -> Step | None:
        ready[distro].wait()
        if not built.get(distro, False):
            say(f"--- {job.name}: not run, its test image failed")
            return None
        return runner(job)

    with ThreadPoolExecutor(max_workers=2) as side, ThreadPoolExecutor(max(1, jobs)) as pool:
        checks_done = side.submit(lambda: [runner(job) for job in checks])
        images_done = side.submit(build_images)
        scenarios_done = [pool.submit(run_scenario, distro, job) for distro, job in scenario_runs]
        steps = checks_done.result() + images_done.result()
        steps += [step for future in scenarios_done if (step := future.result()) is not None]
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run lint, unit tests and Molecule scenarios")
    parser.add_argument("--distro", action="append", choices=sorted(DISTROS))
    parser.add_argument("--scenario", action="append")
    parser.add_argument("--skip-lint", action="store_true")
    parser.add_argument("--skip-unit", action="store_true")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("TEST_JOBS", "0")) or None,
        help="scenario runs side by side (default 3)",
    )
    args = parser.parse_args(argv)

    distros = args.distro or os.environ.get("DISTROS", "").split() or list(DISTROS)
    wanted = args.scenario or os.environ.get("SCENARIOS", "").split() or scenarios()
    unknown = sorted(set(wanted) - set(scenarios()))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {scenarios()}")

    py = sys.executable
    checks: list[Job] = []
    if not args.skip_lint:
        checks.append(Job("lint", ["make", "--no-print-directory", "lint"]))
    if not args.skip_unit:
        checks.append(Job("unit tests", [py, "-m", "pytest", "tests/unit", "-q"]))

    runs = [(s, d) for s in wanted for d in scenario_distros(s, distros)]
    runs.sort(key=lambda run: -WEIGHTS.get(run[0], 1))
    used = {distro for _, distro in runs}
    needed = [distro for distro in distros if distro in used]
    images = {d: Job(f"test image {d}", [py, "-m", "tools.images", d]) for d in needed}
    scenario_runs = [
        (d, Job(f"molecule {s} {d}", ["molecule", "test", "-s", s], molecule_env(s, d)))
        for s, d in runs
    ]
    steps = run_all(checks, images, scenario_runs, args.jobs or 3)

    print("\nSummary (seconds):")
    for step in steps:
        print(f"  {'PASS' if step.ok else 'FAIL'}  {step.seconds:7.0f}  {step.name}")
    for step in steps:
        if not step.ok and step.log is not None:
            print(f"\nWhat failed in {step.name} ({step.log.relative_to(ROOT)}):")
            print("\n".join(f"  {line}" for line in failure_digest(step.log)) or "  (no marker)")
    passed = sum(step.ok for step in steps)
    failed = len(steps) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
