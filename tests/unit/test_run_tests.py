"""The test runner's digest of a failed step's log (what a CI's last screen shows)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tools.run_tests import Job, Runner, Step, failure_digest, run_all


def test_digest_names_the_failed_tests_first_then_fatal_tasks(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text(
        "TASK [x] ***\n"
        'fatal: [stack-debian12]: FAILED! => {"msg": "boom"}\n'
        "E       AssertionError: 502 != 200\n"
        "tests/test_a.py::test_one PASSED\n"
        "=========================== short test summary info ===\n"
        "FAILED tests/test_a.py::test_two[docker://stack] - AssertionError: 502 != 200\n"
        "CRITICAL Ansible return code was 2\n"
    )
    digest = failure_digest(log)
    assert digest[0].startswith("FAILED tests/test_a.py::test_two")
    assert digest[1].startswith("fatal: [stack-debian12]")
    assert digest[2] == "CRITICAL Ansible return code was 2"
    assert digest[3].startswith("E       AssertionError")
    assert "PASSED" not in "".join(digest)


def test_digest_leaves_out_ansible_retry_lines(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text(
        "FAILED - RETRYING: [localhost]: Wait for instance(s) creation (300 retries left).\n"
        "FAILED tests/test_a.py::test_two - AssertionError\n"
    )
    assert failure_digest(log) == ["FAILED tests/test_a.py::test_two - AssertionError"]


def test_digest_is_bounded_in_lines_and_width(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text("".join(f"FAILED t::{i} - {'x' * 500}\n" for i in range(40)))
    digest = failure_digest(log, limit=5, width=80)
    assert len(digest) == 5
    assert all(len(line) == 80 for line in digest)


def test_digest_of_a_log_without_markers_is_empty(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text("something went wrong\n")
    assert failure_digest(log) == []


def test_copy_timed_stamps_phases_and_tasks_only() -> None:
    import io

    from tools.run_tests import copy_timed

    out = io.StringIO()
    source = io.StringIO(
        "INFO     [stack > converge] Executing\n"
        "TASK [nginx : Install] ****\n"
        'ok: [stack-debian12] => {"x": 1}\n'
        "FAILED tests/t.py::test_x\n"
    )
    copy_timed(source, out, start=0.0)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[+") and lines[0].endswith(
        "s] INFO     [stack > converge] Executing"
    )
    assert lines[1].startswith("[+") and "] TASK [nginx : Install]" in lines[1]
    assert lines[2] == 'ok: [stack-debian12] => {"x": 1}'
    assert lines[3] == "FAILED tests/t.py::test_x"


def _recording_runner(
    log: list[tuple[str, str]],
    fail: frozenset[str] = frozenset(),
    delay: dict[str, float] | None = None,
) -> Runner:
    """A runner that records when each job starts and ends, and fails the named ones."""
    lock = threading.Lock()

    def runner(job: Job) -> Step:
        with lock:
            log.append(("start", job.name))
        time.sleep((delay or {}).get(job.name, 0.0))
        with lock:
            log.append(("end", job.name))
        return Step(job.name, job.name not in fail, 0.0)

    return runner


def test_a_scenario_waits_for_its_own_distros_image_only() -> None:
    log: list[tuple[str, str]] = []
    runner = _recording_runner(log, delay={"image d13": 0.3, "lint": 0.3})
    steps = run_all(
        [Job("lint", ["lint"])],
        {"d12": Job("image d12", ["i"]), "d13": Job("image d13", ["i"])},
        [("d12", Job("cluster d12", ["m"])), ("d13", Job("stack d13", ["m"]))],
        jobs=2,
        runner=runner,
    )
    assert [s.name for s in steps] == ["lint", "image d12", "image d13", "cluster d12", "stack d13"]
    # the Debian 12 scenario started while lint and the Debian 13 image were still going
    assert log.index(("start", "cluster d12")) < log.index(("end", "image d13"))
    assert log.index(("start", "cluster d12")) < log.index(("end", "lint"))
    assert log.index(("start", "stack d13")) > log.index(("end", "image d13"))


def test_a_failed_image_skips_its_scenarios_and_keeps_the_failure() -> None:
    log: list[tuple[str, str]] = []
    runner = _recording_runner(log, fail=frozenset({"image d13"}))
    steps = run_all(
        [],
        {"d12": Job("image d12", ["i"]), "d13": Job("image d13", ["i"])},
        [("d13", Job("stack d13", ["m"])), ("d12", Job("stack d12", ["m"]))],
        jobs=2,
        runner=runner,
    )
    assert [(s.name, s.ok) for s in steps] == [
        ("image d12", True),
        ("image d13", False),
        ("stack d12", True),
    ]
    assert ("start", "stack d13") not in log


def test_a_crashing_image_build_releases_the_waiting_scenarios() -> None:
    def runner(job: Job) -> Step:
        if job.name.startswith("image"):
            raise RuntimeError("docker went away")
        return Step(job.name, True, 0.0)

    raised: list[BaseException] = []

    def go() -> None:
        try:
            run_all([], {"d12": Job("image d12", ["i"])}, [("d12", Job("s", ["m"]))], 1, runner)
        except RuntimeError as error:
            raised.append(error)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a scenario still waits for an image that crashed"
    assert [str(error) for error in raised] == ["docker went away"]
