#!/usr/bin/python
"""The release role's layout: the build user, the app tree and the files beside the releases."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_layout
short_description: Create the build user, the app tree, the env file and the manage.py wrapper
description:
  - One call, as root, does what the release role needs on a web host before a build, in this
    order, changing only what differs. Everything it changed is listed in C(changes).
  - First, without changing anything, with I(resolve), the commit its C(ref) names in its
    C(repo) (C(git ls-remote) as its C(user), the deploy user; a full commit id is taken as
    given; an unreadable repository or a ref that does not exist fails the call); with
    I(live_record), the live release's record. Then, with I(lock), the deploy lock is taken
    (the same lock as the djdeploy_lock module's; a lock held by another run fails the call,
    naming its holder, before anything else changes).
  - The build user's group (I(build_user), a system group) and the build user, a system user
    whose primary group is that group, whose supplementary groups are exactly I(build_groups),
    with the shell I(build_shell) and the home I(build_home) (not created here). A new user's
    password is locked (C(!)); the password of an existing user is left as it is. Users and
    groups are read with C(pwd) and C(grp) and changed with C(groupadd), C(useradd) and
    C(usermod).
  - Each of I(directories), in order; created when missing (with missing parents, owned by
    root, mode C(0755)), then its owner, group and mode set when they differ. A symlink to a
    directory is followed; anything else that is not a directory fails.
  - Each path of I(absent) is removed (a directory with everything in it).
  - In every release directory below I(releases_dir) (a name not starting with a dot; a
    symlink is skipped), each pair of I(link_names) whose C(old) entry is a symlink and whose
    C(new) name is free gets C(new), a symlink with the same target, owned by I(links_owner).
  - Each of I(files) (unless C(enabled) is false) is written when its content, owner, group or
    mode differ; a temporary file in the same directory gets the content, owner and mode,
    then is renamed over the file, so a reader sees the old or the new file, never a part.
    The content is never returned or logged.
options:
  build_user:
    description: The build user; its primary group has the same name.
    type: str
    required: true
  build_home:
    description: The build user's home (not created here; list it in I(directories)).
    type: path
    required: true
  build_groups:
    description: The build user's supplementary groups, exactly (they must exist).
    type: list
    elements: str
    default: []
  build_shell:
    description: The build user's shell.
    type: path
    default: /usr/sbin/nologin
  root:
    description: The directory that relative paths of I(directories) are in (the app root).
    type: path
  directories:
    description: Directories to create or correct, in order (parents first).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: >-
          Path of the directory, relative to I(root) (the empty string is I(root) itself) or
          absolute.
        type: str
        required: true
      owner:
        description: Owner (name or uid).
        type: str
        required: true
      group:
        description: Group (name or gid).
        type: str
        required: true
      mode:
        description: Octal mode as a string, set-id and sticky bits included (C("2751")).
        type: str
        required: true
  absent:
    description: Paths to remove (directories recursively); a missing path is no change.
    type: list
    elements: path
    default: []
  releases_dir:
    description: Directory of the releases whose links I(link_names) upgrades.
    type: path
  link_names:
    description: Links renamed since older versions, C(old) name to C(new) name, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      old:
        description: Name of the link in releases of older versions.
        type: str
        required: true
      new:
        description: The current name.
        type: str
        required: true
  links_owner:
    description: >-
      Owner of the links I(link_names) creates (their group: the release directory's when it is
      setgid, else the owner's primary group). Required with I(link_names).
    type: str
  live_record:
    description:
      - Name of the release record inside a release directory; when given, the record of the
        live release (C(<root>/current/<live_record>)) is read before anything changes and
        returned as I(live). A record that exists but cannot be read fails the call first.
    type: str
  resolve:
    description: Resolve a git ref to the commit of this release before anything changes.
    type: dict
    suboptions:
      repo:
        description: The repository (URL or path), as the deploy user reaches it.
        type: str
        required: true
      ref:
        description: Branch, tag, C(HEAD), C(refs/...) or a full commit id.
        type: str
        required: true
      user:
        description: Runs C(git ls-remote) (the deploy user, who holds the credentials).
        type: str
        required: true
  calendars:
    description:
      - systemd calendar expressions (C(OnCalendar)) to check with C(systemd-analyze calendar)
        among the reads, before the lock and any change; one systemd refuses fails the call,
        naming I(calendars_knob).
    type: list
    elements: str
    default: []
  calendars_knob:
    description: The setting the calendar expressions come from (in messages).
    type: str
    default: app_schedules
  lock:
    description:
      - Take the app's deploy lock for this run after the reads and before any change (the
        options of the djdeploy_lock module with C(state=acquired)). The lock stays held when
        the call returns; the switch (or the run's abort) releases it.
    type: dict
  files:
    description: Files to write, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file; its directory must exist.
        type: path
        required: true
      content:
        description: The whole content (never logged or returned).
        type: str
        required: true
      owner:
        description: Owner (name or uid).
        type: str
        required: true
      group:
        description: Group (name or gid).
        type: str
        required: true
      mode:
        description: Octal mode as a string (C("0640")).
        type: str
        required: true
      config:
        description: The file holds the app's settings; a change sets C(config_changed).
        type: bool
        default: false
      enabled:
        description: When false, the file is left as it is (neither written nor removed).
        type: bool
        default: true
attributes:
  check_mode:
    support: full
    description: Reports what would change (in C(changes)) and changes nothing.
notes:
  - Runs as root.
extends_documentation_fragment:
  - djdeploy_lock_option
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Layout | Create the build user, the app tree and the environment file
  djdeploy_layout:
    build_user: demo-build
    build_home: /srv/demo/shared/build-cache
    build_groups: [demo]
    root: /srv/demo
    directories:
      - {path: "", owner: deploy, group: deploy, mode: "0755"}
      - {path: releases, owner: deploy, group: demo, mode: "2751"}
    absent: [/srv/demo/shared/cache/pip]
    releases_dir: /srv/demo/releases
    link_names:
      - {old: .venv, new: .djdeploy-venv}
    links_owner: deploy
    files:
      - path: /srv/demo/shared/.env
        content: "{{ lookup('ansible.builtin.template', 'env.j2') }}"
        owner: deploy
        group: demo
        mode: "0640"
        config: true
  register: layout
"""

RETURN = r"""
changes:
  description: What changed (or would change, in check mode), one line each; never a content.
  returned: always
  type: list
  elements: str
  sample:
    - group demo-build created
    - created /srv/demo/releases (deploy:demo 2751)
    - wrote /srv/demo/shared/.env (content)
config_changed:
  description: Whether a file marked C(config) changed (or would change).
  returned: always
  type: bool
live:
  description: >-
    The live release's record (id, commit, ...); empty without I(live_record) or a live
    release.
  returned: always
  type: dict
commit:
  description: The commit I(resolve) found; empty without I(resolve).
  returned: always
  type: str
lock:
  description: The deploy lock after the call (as djdeploy_lock returns it); empty without I(lock).
  returned: always
  type: dict
"""

import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, Protocol  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_accounts import Command, lookup_account, minimal_env, passed_env
    from djdeploy_accounts import run_command as run_as
    from djdeploy_files import write_atomic
    from djdeploy_git import GIT_ENV, GitError, resolve_ref
    from djdeploy_lock_lib import (
        LOCK_OPTION_SPEC,
        LockError,
        LockRefusedError,
        lock_from_option,
        take_for_run,
    )
    from djdeploy_record import RecordError, read_live_record
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_accounts import (
        Command,
        lookup_account,
        minimal_env,
        passed_env,
    )
    from ansible.module_utils.djdeploy_accounts import run_command as run_as
    from ansible.module_utils.djdeploy_files import write_atomic
    from ansible.module_utils.djdeploy_git import GIT_ENV, GitError, resolve_ref
    from ansible.module_utils.djdeploy_lock_lib import (
        LOCK_OPTION_SPEC,
        LockError,
        LockRefusedError,
        lock_from_option,
        take_for_run,
    )
    from ansible.module_utils.djdeploy_record import RecordError, read_live_record

# run(argv) -> (rc, stdout, stderr)
Runner = Callable[[list[str]], tuple[int, str, str]]


class Chown(Protocol):
    """os.chown's signature: a path or an open file descriptor."""

    def __call__(
        self, target: int | str, uid: int, gid: int, /, *, follow_symlinks: bool = True
    ) -> None: ...


def run_command(argv: list[str]) -> tuple[int, str, str]:
    """Run a command on the host (no shell) and return its exit code and output."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


# git(user, argv) -> (rc, stdout, stderr): a git command run as user.
GitRunner = Callable[[str, list[str]], tuple[int, str, str]]


def run_git_as(user: str, argv: list[str]) -> tuple[int, str, str]:
    """Run git as user (its groups, a minimal environment, never a prompt)."""
    try:
        account = lookup_account(user)
    except LookupError as exc:
        return 1, "", str(exc)
    return run_as(Command(argv, account, minimal_env(account, passed_env(), GIT_ENV)))


def os_chown(target: int | str, uid: int, gid: int, /, *, follow_symlinks: bool = True) -> None:
    if isinstance(target, int):
        os.fchown(target, uid, gid)
    else:
        os.chown(target, uid, gid, follow_symlinks=follow_symlinks)


@dataclass(frozen=True)
class UserEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


class Accounts(Protocol):
    """Reads users and groups (pwd and grp on a host, a dictionary in the tests)."""

    def user(self, name: str) -> UserEntry | None: ...

    def group(self, name: str) -> GroupEntry | None: ...

    def groups(self) -> list[GroupEntry]: ...


class SystemAccounts:
    """The host's users and groups, read afresh on every call (they change during a run)."""

    def user(self, name: str) -> UserEntry | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return UserEntry(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)

    def group(self, name: str) -> GroupEntry | None:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            return None
        return GroupEntry(entry.gr_name, entry.gr_gid, tuple(entry.gr_mem))

    def groups(self) -> list[GroupEntry]:
        return [GroupEntry(g.gr_name, g.gr_gid, tuple(g.gr_mem)) for g in grp.getgrall()]


class LayoutError(Exception):
    """The layout cannot be made; the message says what and where (never a file's content)."""


def parse_mode(text: str, where: Path | str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise LayoutError(f"release: invalid mode {text!r} for {where} (octal, e.g. '0755')")
    return mode


@dataclass(frozen=True)
class Directory:
    path: Path
    owner: str
    group: str
    mode: int


@dataclass(frozen=True)
class ManagedFile:
    path: Path
    content: str = field(repr=False)
    owner: str
    group: str
    mode: int
    config: bool = False


@dataclass(frozen=True)
class LinkName:
    old: str
    new: str


@dataclass
class Config:
    """The module's options."""

    build_user: str
    build_home: str
    build_groups: list[str] = field(default_factory=list)
    build_shell: str = "/usr/sbin/nologin"
    directories: list[Directory] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    releases_dir: Path | None = None
    link_names: list[LinkName] = field(default_factory=list)
    links_owner: str | None = None
    files: list[ManagedFile] = field(default_factory=list)
    # The live release's record file name (read from <root>/current/), when asked for.
    live_record: str | None = None
    root: Path | None = None
    # resolve: {repo, ref, user}; lock: the lock option (djdeploy_lock_lib.LOCK_OPTION_SPEC).
    resolve: dict[str, str] | None = None
    lock: dict[str, Any] | None = None
    # systemd calendar expressions to check before any change (app_schedules).
    calendars: list[str] = field(default_factory=list)
    calendars_knob: str = "app_schedules"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Config:
        root = params.get("root")

        def directory(path: str) -> Path:
            if Path(path).is_absolute():
                return Path(path)
            if not root:
                raise LayoutError(f"release: the directory {path!r} is relative: give root")
            return Path(root, path) if path else Path(root)

        return cls(
            build_user=params["build_user"],
            build_home=params["build_home"],
            build_groups=list(params.get("build_groups") or []),
            build_shell=params.get("build_shell") or "/usr/sbin/nologin",
            directories=[
                Directory(
                    directory(d["path"]),
                    d["owner"],
                    d["group"],
                    parse_mode(d["mode"], directory(d["path"])),
                )
                for d in params.get("directories") or []
            ],
            absent=[Path(p) for p in params.get("absent") or []],
            releases_dir=Path(params["releases_dir"]) if params.get("releases_dir") else None,
            link_names=[LinkName(n["old"], n["new"]) for n in params.get("link_names") or []],
            links_owner=params.get("links_owner"),
            live_record=params.get("live_record"),
            root=Path(root) if root else None,
            resolve=params.get("resolve"),
            lock=params.get("lock"),
            calendars=list(params.get("calendars") or []),
            calendars_knob=params.get("calendars_knob") or "app_schedules",
            files=[
                ManagedFile(
                    Path(f["path"]),
                    f["content"],
                    f["owner"],
                    f["group"],
                    parse_mode(f["mode"], f["path"]),
                    bool(f.get("config")),
                )
                for f in params.get("files") or []
                if f.get("enabled", True)
            ],
        )


def _octal(mode: int) -> str:
    return f"{mode:04o}"


class Layout:
    """The layout of one app on one host. Commands, accounts and chown are injectable."""

    def __init__(
        self,
        cfg: Config,
        *,
        run: Runner = run_command,
        accounts: Accounts | None = None,
        chown: Chown = os_chown,
        git: GitRunner = run_git_as,
        check_mode: bool = False,
    ) -> None:
        self.cfg = cfg
        self.run = run
        self.git = git
        self.accounts: Accounts = accounts if accounts is not None else SystemAccounts()
        self.chown = chown
        self.check_mode = check_mode
        self.changes: list[str] = []
        self.config_changed = False
        self.live: dict[str, Any] = {}
        self.commit = ""
        self.lock: dict[str, Any] = {}
        self.warnings: list[str] = []

    def apply(self) -> None:
        # Reads first, then the lock: a bad ref, a broken record or another run's lock change
        # nothing.
        self.resolve_commit()
        self.read_live()
        self.check_calendars()
        self.take_lock()
        self.ensure_build_user()
        self.ensure_directories()
        self.remove_absent()
        self.upgrade_links()
        self.write_files()

    def result(self) -> dict[str, Any]:
        return {
            "changed": bool(self.changes),
            "changes": list(self.changes),
            "config_changed": self.config_changed,
            "live": dict(self.live),
            "commit": self.commit,
            "lock": dict(self.lock),
        }

    def resolve_commit(self) -> None:
        """The commit the release's ref names (git ls-remote as the deploy user)."""
        if not self.cfg.resolve:
            return
        r = self.cfg.resolve
        host = (self.cfg.lock or {}).get("host") or os.uname().nodename
        try:
            self.commit = resolve_ref(
                lambda argv: self.git(r["user"], argv), r["repo"], r["ref"], r["user"], host
            )
        except GitError as exc:
            raise LayoutError(str(exc)) from exc

    def check_calendars(self) -> None:
        """Each calendar expression as systemd reads it (systemd-analyze calendar)."""
        refused = []
        for expression in self.cfg.calendars:
            rc, out, err = self.run(["systemd-analyze", "calendar", "--iterations=1", expression])
            if rc != 0:
                refused.append(f"{expression!r} ({(err or out).strip()[:200]})")
        if refused:
            raise LayoutError(
                f"release: {self.cfg.calendars_knob}: systemd does not accept the on_calendar"
                f" expression(s) {'; '.join(refused)}; nothing was changed"
            )

    def take_lock(self) -> None:
        """This run's deploy lock (a lock of another run fails the call, naming its holder)."""
        if not self.cfg.lock:
            return
        try:
            lock, owner = lock_from_option(self.cfg.lock)
            taken, warnings = take_for_run(
                lock,
                owner,
                break_lock=bool(self.cfg.lock.get("break_lock")),
                check_mode=self.check_mode,
            )
        except LockRefusedError as exc:
            self.lock = exc.result.as_dict()
            raise LayoutError(str(exc)) from exc
        except LockError as exc:
            raise LayoutError(str(exc)) from exc
        self.lock = taken.as_dict()
        self.warnings.extend(warnings)

    def read_live(self) -> None:
        """The live release's record (read first: a broken record changes nothing)."""
        if not self.cfg.live_record:
            return
        if self.cfg.root is None:
            raise LayoutError("release: live_record needs root (the app's tree)")
        try:
            self.live = read_live_record(self.cfg.root, self.cfg.live_record)
        except RecordError as exc:
            raise LayoutError(str(exc)) from exc

    # Helpers ---------------------------------------------------------------------------

    def _changed(self, what: str) -> None:
        self.changes.append(what)

    def _command(self, argv: list[str], what: str) -> None:
        if not self.check_mode:
            rc, out, err = self.run(argv)
            if rc != 0:
                detail = (err or out).strip() or "no output"
                raise LayoutError(f"release: {' '.join(argv)} failed (rc {rc}): {detail}")
        self._changed(what)

    def _uid(self, owner: str) -> int | None:
        if owner.isdigit():
            return int(owner)
        user = self.accounts.user(owner)
        return None if user is None else user.uid

    def _gid(self, group: str) -> int | None:
        if group.isdigit():
            return int(group)
        entry = self.accounts.group(group)
        return None if entry is None else entry.gid

    def _ids(self, owner: str, group: str, where: Path) -> tuple[int, int] | None:
        """The uid and gid to give where; None in check mode when one does not exist yet."""
        uid, gid = self._uid(owner), self._gid(group)
        if uid is not None and gid is not None:
            return uid, gid
        if self.check_mode:
            # The build user and its group may only be created by this run.
            return None
        missing = f"no user named {owner}" if uid is None else f"no group named {group}"
        raise LayoutError(f"release: cannot give {where} to {owner}:{group}: {missing}")

    # 1. The build user -----------------------------------------------------------------

    def ensure_build_user(self) -> None:
        cfg = self.cfg
        name = cfg.build_user
        missing = [g for g in cfg.build_groups if self.accounts.group(g) is None]
        if missing:
            raise LayoutError(
                f"release: the build user {name} needs the group(s) {', '.join(missing)}, "
                "which do not exist (the gunicorn role creates the runtime user and group)"
            )
        own_group = self.accounts.group(name)
        if own_group is None:
            self._command(["groupadd", "-r", name], f"group {name} created")
            own_group = self.accounts.group(name)
        user = self.accounts.user(name)
        if user is None:
            argv = ["useradd", "-g", name]
            if cfg.build_groups:
                argv += ["-G", ",".join(cfg.build_groups)]
            argv += ["-d", cfg.build_home, "-s", cfg.build_shell, "-p", "!", "-M", "-r", name]
            self._command(argv, f"user {name} created")
            return
        flags: list[str] = []
        what: list[str] = []
        if own_group is None or user.gid != own_group.gid:
            flags += ["-g", name]
            what.append(f"primary group {name}")
        # Supplementary: the groups that list the user, except its primary group (by name
        # when the primary group is right already, else by gid, as the user module does).
        by_name = own_group is not None and user.gid == own_group.gid
        current = sorted(
            g.name
            for g in self.accounts.groups()
            if name in g.members and not (g.name == name if by_name else g.gid == user.gid)
        )
        if set(current) != set(cfg.build_groups):
            flags += ["-G", ",".join(cfg.build_groups)]
            wanted = ",".join(cfg.build_groups) or "none"
            what.append(f"supplementary groups {','.join(current) or 'none'} -> {wanted}")
        if user.home != cfg.build_home:
            flags += ["-d", cfg.build_home]
            what.append(f"home {user.home} -> {cfg.build_home}")
        if user.shell != cfg.build_shell:
            flags += ["-s", cfg.build_shell]
            what.append(f"shell {user.shell} -> {cfg.build_shell}")
        if flags:
            self._command(["usermod", *flags, name], f"user {name}: {'; '.join(what)}")

    # 2. The app tree -------------------------------------------------------------------

    def ensure_directories(self) -> None:
        for directory in self.cfg.directories:
            self._ensure_directory(directory)

    def _ensure_directory(self, d: Directory) -> None:
        path = d.path
        try:
            info: os.stat_result | None = path.stat()
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise LayoutError(f"release: cannot read {path}: {exc.strerror}") from exc
        if info is not None and not stat.S_ISDIR(info.st_mode):
            raise LayoutError(f"release: {path} exists and is not a directory")
        ids = self._ids(d.owner, d.group, path)
        try:
            if info is None:
                if not self.check_mode:
                    assert ids is not None  # resolved outside check mode
                    if not path.parent.is_dir():
                        path.parent.mkdir(mode=0o755, parents=True)
                    path.mkdir(mode=0o700)
                    info = path.stat()
                    if (info.st_uid, info.st_gid) != ids:
                        self.chown(str(path), *ids)
                    path.chmod(d.mode)
                self._changed(f"created {path} ({d.owner}:{d.group} {_octal(d.mode)})")
                return
            if ids is None or (info.st_uid, info.st_gid) != ids:
                if not self.check_mode:
                    assert ids is not None
                    self.chown(str(path), *ids)
                self._changed(f"chown {d.owner}:{d.group} {path} (was {info.st_uid}:{info.st_gid})")
                if not self.check_mode:
                    info = path.stat()  # chown may clear set-id bits
            if stat.S_IMODE(info.st_mode) != d.mode:
                if not self.check_mode:
                    path.chmod(d.mode)
                self._changed(
                    f"chmod {_octal(d.mode)} {path} (was {_octal(stat.S_IMODE(info.st_mode))})"
                )
        except OSError as exc:
            raise LayoutError(f"release: cannot set up the directory {path}: {exc}") from exc

    # 3. Paths to remove ----------------------------------------------------------------

    def remove_absent(self) -> None:
        for path in self.cfg.absent:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not self.check_mode:
                try:
                    if stat.S_ISDIR(info.st_mode):
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except OSError as exc:
                    raise LayoutError(f"release: cannot remove {path}: {exc}") from exc
            self._changed(f"removed {path}")

    # 4. Link names of older releases ---------------------------------------------------

    def _release_dirs(self, releases: Path) -> Iterable[Path]:
        try:
            entries = sorted(os.scandir(releases), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LayoutError(f"release: cannot read {releases}: {exc}") from exc
        return [
            Path(e.path)
            for e in entries
            if not e.name.startswith(".") and not e.is_symlink() and e.is_dir()
        ]

    def upgrade_links(self) -> None:
        releases, owner = self.cfg.releases_dir, self.cfg.links_owner
        if not self.cfg.link_names:
            return
        if releases is None or not owner:
            raise LayoutError("release: link_names needs releases_dir and links_owner")
        for release in self._release_dirs(releases):
            for pair in self.cfg.link_names:
                old, new = release / pair.old, release / pair.new
                if not old.is_symlink() or new.is_symlink() or new.exists():
                    continue
                if not self.check_mode:
                    self._link(release, old, new, owner)
                self._changed(f"linked {new}")

    def _link(self, release: Path, old: Path, new: Path, owner: str) -> None:
        """new -> old's target, owned as if owner had made it (the group: the release
        directory's when it is setgid, else the owner's primary group)."""
        user = self.accounts.user(owner)
        if user is None:
            raise LayoutError(f"release: cannot link {new}: no user named {owner}")
        try:
            new.symlink_to(old.readlink())
            setgid = release.stat().st_mode & stat.S_ISGID
            self.chown(str(new), user.uid, -1 if setgid else user.gid, follow_symlinks=False)
        except OSError as exc:
            raise LayoutError(f"release: cannot link {new}: {exc}") from exc

    # 5. Files --------------------------------------------------------------------------

    def write_files(self) -> None:
        for managed in self.cfg.files:
            self._write_file(managed)

    def _differences(self, f: ManagedFile, ids: tuple[int, int] | None) -> list[str]:
        """What differs between the file on disk and f (empty: nothing to write)."""
        try:
            info = f.path.lstat()
        except FileNotFoundError:
            return ["new"]
        if stat.S_ISDIR(info.st_mode):
            raise LayoutError(f"release: cannot write {f.path}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            return ["not a regular file"]
        reasons: list[str] = []
        with f.path.open("rb") as current:
            if current.read() != f.content.encode():
                reasons.append("content")
        if ids is None or (info.st_uid, info.st_gid) != ids:
            reasons.append(f"owner {info.st_uid}:{info.st_gid} -> {f.owner}:{f.group}")
        if stat.S_IMODE(info.st_mode) != f.mode:
            reasons.append(f"mode {_octal(stat.S_IMODE(info.st_mode))} -> {_octal(f.mode)}")
        return reasons

    def _write_file(self, f: ManagedFile) -> None:
        ids = self._ids(f.owner, f.group, f.path)
        directory = f.path.parent
        if not directory.is_dir() and not self.check_mode:
            raise LayoutError(f"release: cannot write {f.path}: {directory} is not a directory")
        try:
            reasons = self._differences(f, ids)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise LayoutError(f"release: cannot read {f.path}: {reason}") from exc
        if not reasons:
            return
        if not self.check_mode:
            assert ids is not None
            self._replace(f, ids)
        self._changed(f"wrote {f.path} ({', '.join(reasons)})")
        if f.config:
            self.config_changed = True

    def _replace(self, f: ManagedFile, ids: tuple[int, int]) -> None:
        """Write f under a temporary name in its directory (0600 until done), rename it over."""

        def own(_temporary: Path, fd: int) -> None:
            info = os.fstat(fd)
            if (info.st_uid, info.st_gid) != ids:
                self.chown(fd, *ids)

        try:
            write_atomic(f.path, f.content.encode(), f.mode, own=own)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise LayoutError(f"release: cannot write {f.path}: {reason}") from exc


def run(params: dict[str, Any], check_mode: bool) -> tuple[Layout, LayoutError | None]:
    """Carry out one call with the module's parameters; the error, if any, is returned."""
    layout = Layout(Config.from_params(params), check_mode=check_mode)
    try:
        layout.apply()
    except LayoutError as exc:
        return layout, exc
    return layout, None


ARGUMENT_SPEC: dict[str, Any] = {
    "build_user": {"type": "str", "required": True},
    "build_home": {"type": "path", "required": True},
    "build_groups": {"type": "list", "elements": "str", "default": []},
    "build_shell": {"type": "path", "default": "/usr/sbin/nologin"},
    "root": {"type": "path"},
    "directories": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "path": {"type": "str", "required": True},
            "owner": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "mode": {"type": "str", "required": True},
        },
    },
    "absent": {"type": "list", "elements": "path", "default": []},
    "releases_dir": {"type": "path"},
    "link_names": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "old": {"type": "str", "required": True},
            "new": {"type": "str", "required": True},
        },
    },
    "links_owner": {"type": "str"},
    "live_record": {"type": "str"},
    "resolve": {
        "type": "dict",
        "options": {
            "repo": {"type": "str", "required": True},
            "ref": {"type": "str", "required": True},
            "user": {"type": "str", "required": True},
        },
    },
    "lock": LOCK_OPTION_SPEC,
    "calendars": {"type": "list", "elements": "str", "default": []},
    "calendars_knob": {"type": "str", "default": "app_schedules"},
    "files": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "path": {"type": "path", "required": True},
            # Secrets (the env file): masked wherever the module logs or returns anything.
            "content": {"type": "str", "required": True, "no_log": True},
            "owner": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "mode": {"type": "str", "required": True},
            "config": {"type": "bool", "default": False},
            "enabled": {"type": "bool", "default": True},
        },
    },
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    try:
        layout, error = run(module.params, module.check_mode)
    except LayoutError as exc:  # invalid options (a mode)
        module.fail_json(msg=str(exc), changed=False, changes=[], config_changed=False)
        return
    result = layout.result()
    for warning in layout.warnings:
        module.warn(warning)
    if error is not None:
        module.fail_json(msg=str(error), **result)
    count = len(layout.changes)
    verb = "would change" if module.check_mode else "changed"
    result["msg"] = f"{verb} {count} thing(s)" if count else "nothing to change"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
