"""The hardening role's host files module (roles/hardening/library/djdeploy_host_files.py), on
tmp_path with a recording chown (the real one needs root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from .loader import load, run_module

hostfiles = load("roles/hardening/library/djdeploy_host_files.py")
MODULE = "roles/hardening/library/djdeploy_host_files.py"


class Chowns:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, path: str, uid: int, gid: int) -> None:
        self.calls.append((path, uid, gid))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def apply(params: dict[str, Any], check: bool = False) -> list[str]:
    changes: list[str] = hostfiles.run(params, check, chown=Chowns())
    return changes


def test_creates_directories_with_parents_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "cron.d"
    chowns = Chowns()
    changes = hostfiles.run(
        {"directories": [{"path": str(target), "mode": "0700"}]}, False, chown=chowns
    )
    assert changes == [f"created {target}"]
    assert mode_of(target) == 0o700
    assert mode_of(target.parent) == 0o755
    assert (str(target), 0, 0) in chowns.calls and (str(target.parent), 0, 0) in chowns.calls


def test_an_existing_directory_gets_its_mode_and_a_file_in_its_place_fails(tmp_path: Path) -> None:
    existing = tmp_path / "cron.daily"
    existing.mkdir(mode=0o755)
    assert apply({"directories": [{"path": str(existing), "mode": "0700"}]}) == [
        f"mode 0700 {existing}"
    ]
    assert mode_of(existing) == 0o700
    assert apply({"directories": [{"path": str(existing), "mode": "0700"}]}) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(hostfiles.HostFilesError, match="is not a directory"):
        apply({"directories": [{"path": str(blocker), "mode": "0700"}]})


def test_files_are_written_once_and_corrected_in_mode(tmp_path: Path) -> None:
    issue = tmp_path / "issue"
    spec = {"files": [{"path": str(issue), "content": "Authorized only.\n", "mode": "0644"}]}
    assert apply(spec) == [f"wrote {issue}"]
    assert issue.read_text() == "Authorized only.\n"
    assert mode_of(issue) == 0o644
    assert apply(spec) == []
    issue.chmod(0o600)
    assert apply(spec) == [f"mode 0644 {issue}"]
    issue.write_text("changed by hand\n")
    assert apply(spec) == [f"wrote {issue}"]
    assert issue.read_text() == "Authorized only.\n"
    # No temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issue"]


def test_check_mode_reports_and_changes_nothing(tmp_path: Path) -> None:
    issue = tmp_path / "issue"
    login_defs = tmp_path / "login.defs"
    login_defs.write_text("PASS_MAX_DAYS\t99999\n")
    spec = {
        "directories": [{"path": str(tmp_path / "d"), "mode": "0700"}],
        "files": [{"path": str(issue), "content": "x\n"}],
        "settings": [{"path": str(login_defs), "key": "PASS_MAX_DAYS", "value": "365"}],
    }
    changes = apply(spec, check=True)
    assert changes == [
        f"created {tmp_path / 'd'}",
        f"wrote {issue}",
        f"set PASS_MAX_DAYS in {login_defs}",
    ]
    assert not issue.exists() and not (tmp_path / "d").exists()
    assert login_defs.read_text() == "PASS_MAX_DAYS\t99999\n"


def test_absent_removes_files_only(tmp_path: Path) -> None:
    timeout = tmp_path / "60-timeout.sh"
    timeout.write_text("TMOUT=900\n")
    assert apply({"absent": [str(timeout)]}) == [f"removed {timeout}"]
    assert not timeout.exists()
    assert apply({"absent": [str(timeout)]}) == []
    with pytest.raises(hostfiles.HostFilesError, match="is a directory"):
        apply({"absent": [str(tmp_path)]})


def test_modes_apply_to_existing_paths_only(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("# m h dom mon dow user command\n")
    crontab.chmod(0o644)
    missing = tmp_path / "sshd_config"
    spec = {"modes": {str(crontab): "0600", str(missing): "0600"}}
    assert apply(spec) == [f"mode 0600 {crontab}"]
    assert mode_of(crontab) == 0o600
    assert not missing.exists()
    assert apply(spec) == []


def test_settings_replace_the_lines_that_set_the_key_else_a_commented_one(tmp_path: Path) -> None:
    login_defs = tmp_path / "login.defs"
    login_defs.write_text(
        "# Password aging controls:\n"
        "#\tPASS_MAX_DAYS\tMaximum number of days a password may be used.\n"
        "PASS_MAX_DAYS\t99999\n"
        "PASS_MIN_DAYS\t0\n"
        "#SHA_CRYPT_MIN_ROUNDS 5000\n"
        "PASS_MAX_DAYS_EXTRA x\n"
        "UMASK\t\t022"
    )
    login_defs.chmod(0o644)
    spec = {
        "settings": [
            {"path": str(login_defs), "key": key, "value": value}
            for key, value in [
                ("PASS_MAX_DAYS", "365"),
                ("SHA_CRYPT_MIN_ROUNDS", "5000"),
                ("SHA_CRYPT_MAX_ROUNDS", "10000"),
            ]
        ]
    }
    assert len(apply(spec)) == 3
    assert login_defs.read_text() == (
        "# Password aging controls:\n"
        "#\tPASS_MAX_DAYS\tMaximum number of days a password may be used.\n"
        "PASS_MAX_DAYS\t365\n"
        "PASS_MIN_DAYS\t0\n"
        "SHA_CRYPT_MIN_ROUNDS\t5000\n"
        "PASS_MAX_DAYS_EXTRA x\n"
        "UMASK\t\t022\n"
        "SHA_CRYPT_MAX_ROUNDS\t10000\n"
    )
    assert mode_of(login_defs) == 0o644
    assert apply(spec) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"files": [{"path": "relative/issue", "content": ""}]}, "not an absolute path"),
        ({"directories": [{"path": "/x", "mode": "rwx"}]}, 'octal string such as "0644"'),
        (
            {"settings": [{"path": "/nonexistent/login.defs", "key": "A", "value": "1"}]},
            "does not exist",
        ),
        (
            {"settings": [{"path": "/etc/hostname", "key": "A B", "value": "1"}]},
            "not a setting name",
        ),
    ],
)
def test_bad_input_names_the_path(params: dict[str, Any], message: str) -> None:
    with pytest.raises(hostfiles.HostFilesError, match=message):
        apply(params)


def test_a_file_whose_directory_is_missing_fails(tmp_path: Path) -> None:
    with pytest.raises(hostfiles.HostFilesError, match="its directory does not exist"):
        apply({"files": [{"path": str(tmp_path / "no" / "file"), "content": ""}]})


@pytest.mark.skipif(os.geteuid() != 0, reason="the real chown to root needs root")
def test_as_a_module_process(tmp_path: Path) -> None:
    target = tmp_path / "limits.d" / "60.conf"
    (tmp_path / "limits.d").mkdir()
    args = {"files": [{"path": str(target), "content": "* hard core 0\n"}]}
    code, result, output = run_module(MODULE, args, tmp_path)
    assert code == 0, output
    assert result["changed"] is True and result["changes"] == [f"wrote {target}"]
    code, result, output = run_module(MODULE, args, tmp_path)
    assert code == 0 and result["changed"] is False, output
    code, result, output = run_module(MODULE, {"absent": [str(tmp_path / "limits.d")]}, tmp_path)
    assert code == 1 and "is a directory" in result["msg"], output
