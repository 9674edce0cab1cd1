"""The test runner's digest of a failed step's log (what a CI's last screen shows)."""

from __future__ import annotations

from pathlib import Path

from tools.run_tests import failure_digest


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
