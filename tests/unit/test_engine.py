"""tools/engine.py: the stale pid file of a dockerd that did not stop."""

from __future__ import annotations

from pathlib import Path

from tools import engine


def test_a_pid_file_of_no_running_process_is_removed(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("4122")
    assert engine.clear_stale_pidfile(pidfile, proc) is True
    assert not pidfile.exists()


def test_a_pid_file_of_a_running_process_is_kept(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "4122").mkdir(parents=True)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("4122\n")
    assert engine.clear_stale_pidfile(pidfile, proc) is False
    assert pidfile.read_text() == "4122\n"


def test_no_pid_file_is_nothing_to_do(tmp_path: Path) -> None:
    assert engine.clear_stale_pidfile(tmp_path / "docker.pid", tmp_path) is False


def test_an_empty_pid_file_is_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("")
    assert engine.clear_stale_pidfile(pidfile, tmp_path) is True
