"""Unit tests of roles/release/module_utils/djdeploy_accounts.py (commands as another user).

The build (library/djdeploy_build.py) and the migrations (library/djdeploy_migrate.py) run
their commands through it; what they run is tested in their own test files.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from .loader import load

acc = load("roles/release/module_utils/djdeploy_accounts.py")


def me(home: Path) -> object:
    return acc.Account("me", os.getuid(), "me", os.getgid(), str(home))


def test_the_real_runner_pipes_with_the_umask_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Switching users needs root; the rest of the runner is the same without it.
    monkeypatch.setattr(acc, "_identity", lambda account: {})
    account = me(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "MARK": "x"}
    source = acc.Command(["printf", "a\\nb\\n"], account, env, str(tmp_path))
    sink = acc.Command(
        ["sh", "-c", 'umask; tr a z; echo "$MARK" >&2'], account, env, str(tmp_path), 0o026, source
    )
    rc, out, err = acc.run_command(sink)
    assert (rc, out, err) == (0, "0026\nz\nb\n", "x\n")

    failing = acc.Command(["sh", "-c", "echo boom >&2; exit 3"], account, env, str(tmp_path))
    rc, out, err = acc.run_command(
        acc.Command(["cat"], account, env, str(tmp_path), source=failing)
    )
    assert rc == 3 and "boom" in err


def test_a_single_command_gets_its_cwd_umask_and_only_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acc, "_identity", lambda account: {})
    monkeypatch.setenv("LEAK", "no")
    env = {"PATH": "/usr/bin:/bin", "MARK": "y"}
    script = 'umask; pwd; echo "${LEAK:-unset} $MARK"; echo err >&2; exit 4'
    cmd = acc.Command(["sh", "-c", script], me(tmp_path), env, str(tmp_path), 0o077)
    assert acc.run_command(cmd) == (4, f"0077\n{tmp_path}\nunset y\n", "err\n")


def test_inherit_umask_leaves_the_module_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acc, "_identity", lambda account: {})
    own = os.umask(0o027)
    try:
        cmd = acc.Command(["sh", "-c", "umask"], me(tmp_path), {"PATH": "/usr/bin:/bin"})
        cmd.umask = acc.INHERIT_UMASK
        assert acc.run_command(cmd)[1] == "0027\n"
    finally:
        os.umask(own)


def test_the_identity_is_the_account_s_uid_gid_and_groups() -> None:
    account = acc.Account("demo", 1234, "demo", 1235, "/home/demo", (1235, 33))
    assert acc._identity(account) == {"user": 1234, "group": 1235, "extra_groups": [1235, 33]}
    # A command's defaults: the root directory, umask 022, no pipe.
    cmd = acc.Command(["true"], account, {})
    assert (cmd.cwd, cmd.umask, cmd.source) == ("/", 0o022, None)


def test_the_minimal_environment_in_its_order_of_precedence() -> None:
    account = acc.Account("demo", 1234, "demo", 1235, "/home/demo")
    env = acc.minimal_env(
        account, {"https_proxy": "http://proxy:3128", "LANG": "base"}, {"LANG": "extra", "X": "1"}
    )
    assert env == {
        "HOME": "/home/demo",
        "USER": "demo",
        "LOGNAME": "demo",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "extra",
        "https_proxy": "http://proxy:3128",
        "X": "1",
    }
    assert acc.minimal_env(account, {})["LANG"] == "C.UTF-8"


def test_only_the_proxy_variables_are_passed_on() -> None:
    environ = {"https_proxy": "http://p:3128", "NO_PROXY": "localhost", "SECRET": "x", "PATH": "/"}
    assert acc.passed_env(environ) == {"https_proxy": "http://p:3128", "NO_PROXY": "localhost"}
    assert acc.passed_env({}) == {}


def test_lookup_account_reads_the_user_and_its_groups() -> None:
    entry = pwd.getpwuid(os.getuid())
    account = acc.lookup_account(entry.pw_name)
    assert (account.user, account.uid, account.gid, account.home) == (
        entry.pw_name,
        entry.pw_uid,
        entry.pw_gid,
        entry.pw_dir,
    )
    assert account.group == grp.getgrgid(entry.pw_gid).gr_name
    assert account.extra_groups == tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    # The build user's groups are given (only the runtime group), not read.
    assert acc.lookup_account(entry.pw_name, extra_groups=(4242,)).extra_groups == (4242,)


def test_lookups_of_missing_names_say_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LookupError, match=r"^the user no-such-user does not exist on this host$"):
        acc.lookup_account("no-such-user")
    with pytest.raises(LookupError, match=r"^the user no-such-user does not exist on this host$"):
        acc.lookup_uid("no-such-user")
    with pytest.raises(LookupError, match=r"^the group no-such-group does not exist on this host$"):
        acc.lookup_gid("no-such-group")
    assert acc.lookup_uid(pwd.getpwuid(os.getuid()).pw_name) == os.getuid()
    assert acc.lookup_gid(grp.getgrgid(os.getgid()).gr_name) == os.getgid()

    def no_group(gid: int) -> None:
        raise KeyError(gid)

    monkeypatch.setattr(acc.grp, "getgrgid", no_group)
    name = pwd.getpwuid(os.getuid()).pw_name
    with pytest.raises(LookupError, match=f"primary group {os.getgid()} of the user {name}"):
        acc.lookup_account(name)
