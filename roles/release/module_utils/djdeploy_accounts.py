"""Running a command as another user of the host, the same way in every module of the role.

The modules run as root and run the app's commands as the user they belong to: ``subprocess``
with ``user=``, ``group=`` and ``extra_groups=`` (no sudo, no su), no shell, stdin from
/dev/null, and a minimal environment (HOME, USER, LOGNAME, PATH, LANG, the proxy variables of
the module's own environment) plus the command's own variables.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PATH = "/usr/local/bin:/usr/bin:/bin"
# Passed on from the module's environment (a play's `environment:` reaches the commands).
PASS_ENV = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)
# Command.umask: leave the module's own umask to the command.
INHERIT_UMASK = -1


@dataclass(frozen=True)
class Account:
    """A user commands run as: primary group, supplementary groups (gids) and HOME."""

    user: str
    uid: int
    group: str
    gid: int
    home: str
    extra_groups: tuple[int, ...] = ()


@dataclass
class Command:
    """One command: argv, who runs it, its environment; source feeds its stdin (a pipe)."""

    argv: list[str]
    account: Account
    env: dict[str, str]
    cwd: str = "/"
    umask: int = 0o022
    source: Command | None = None


# run(command) -> (rc, stdout, stderr); a pipe's rc is the first non-zero one, stderr both.
Runner = Callable[[Command], tuple[int, str, str]]


def _identity(account: Account) -> dict[str, Any]:
    return {
        "user": account.uid,
        "group": account.gid,
        "extra_groups": list(account.extra_groups),
    }


def run_command(cmd: Command) -> tuple[int, str, str]:
    """Run a command (or a two-command pipe) as its account; no shell, stdin from /dev/null."""
    if cmd.source is None:
        proc = subprocess.run(
            cmd.argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=cmd.env,
            cwd=cmd.cwd,
            umask=cmd.umask,
            check=False,
            **_identity(cmd.account),
        )
        return (
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )

    def popen(c: Command, stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            c.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=c.env,
            cwd=c.cwd,
            umask=c.umask,
            **_identity(c.account),
        )

    with tempfile.TemporaryFile() as source_err:
        source = popen(cmd.source, subprocess.DEVNULL, subprocess.PIPE, source_err)
        try:
            sink = popen(cmd, source.stdout, subprocess.PIPE, subprocess.PIPE)
        finally:
            assert source.stdout is not None
            source.stdout.close()
        out, err = sink.communicate()
        source.wait()
        source_err.seek(0)
        errors = source_err.read().decode(errors="replace") + err.decode(errors="replace")
    rc = source.returncode or sink.returncode
    return rc, out.decode(errors="replace"), errors


def passed_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables of PASS_ENV that the module's own environment sets."""
    return {name: environ[name] for name in PASS_ENV if name in environ}


def minimal_env(
    account: Account, base: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A command's environment: the account's, PATH, LANG, then base (proxies), then extra."""
    return {
        "HOME": account.home,
        "USER": account.user,
        "LOGNAME": account.user,
        "PATH": PATH,
        "LANG": "C.UTF-8",
        **base,
        **(extra or {}),
    }


def lookup_uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError as exc:
        raise LookupError(f"the user {user} does not exist on this host") from exc


def lookup_gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise LookupError(f"the group {group} does not exist on this host") from exc


def lookup_account(user: str, *, extra_groups: tuple[int, ...] | None = None) -> Account:
    """The account of a user; its supplementary groups from the group database by default."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise LookupError(f"the user {user} does not exist on this host") from exc
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError as exc:
        raise LookupError(
            f"the primary group {entry.pw_gid} of the user {user} does not exist on this host"
        ) from exc
    if extra_groups is None:
        extra_groups = tuple(os.getgrouplist(user, entry.pw_gid))
    return Account(
        user=user,
        uid=entry.pw_uid,
        group=group,
        gid=entry.pw_gid,
        home=entry.pw_dir,
        extra_groups=extra_groups,
    )
