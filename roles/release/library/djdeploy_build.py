#!/usr/bin/python
"""The build of one release, in one module call: mirror, project, export, venv, static, checks.

Runs as root and runs every command as the user it belongs to (``subprocess`` ``user=``,
``group=``, ``extra_groups=``; no sudo, no su), with a minimal environment for that user.

Threat model. Everything that runs code of the app or of its dependencies (``tar -x`` of the
export, ``python -m venv``, the installers, which run sdists' build hooks, collectstatic and
the deploy check, which import the settings) runs as the app's build user (``<app>-build``):
no sudo, no login, its only supplementary group is the runtime group (so it reads its own
app's ``shared/.env``, which collectstatic needs, and nothing of other apps). What it writes
is its own only while the build runs: root creates each directory it writes in
(``releases/<id>``, ``venvs/<key>``, ``static/<id>``; their parents stay the deploy user's, so
the build user can neither create nor rename nor remove entries there), kills whatever it left
running after each of its commands, and hands the tree to the deploy user at the end (no write
for group and others, no set-id bits). So a malicious sdist or settings import cannot write the
live release's code or venv, now or in a later build, and root never writes into a directory
while a process of the build user runs. Its installer caches (``cache_dir``, its HOME) are
its own and can be poisoned, but only for later builds of the same app, which run as the same
user anyway.

The project is read at the commit before anything outside the mirror changes (how it installs,
its Python requirement: ``module_utils/djdeploy_project_lib.py``), with git run as the deploy
user, whose mirror it is (git refuses a repository of another user).
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_build
short_description: Build one release of a Django app, each command as the user it belongs to
description:
  - Runs as root. Git mirror operations run as I(deploy_user) (who holds the repository's
    credentials; the mirror stays the deploy user's); everything that runs code of the app or
    its dependencies runs as I(build_user) with I(runtime_group) as its only supplementary
    group. Commands get a minimal environment (HOME, USER, LOGNAME, PATH, LANG, the proxy
    variables of the module's own environment) plus their own variables.
  - Steps, in order, each timed. Mirror (clone I(repo) into I(mirror) when missing, update it
    when it lacks I(commit), fail when the commit is still missing); project (the project's
    files are read at I(commit) from the mirror with C(git show) as I(deploy_user), and its
    install is decided in this order unless I(method) forces one, C(uv.lock), C(poetry.lock),
    a requirements file, C(pyproject.toml) with a C([build-system]) or C([project]
    dependencies); C(requires-python) (or Poetry's C(python) dependency) and
    C(.python-version) are checked against the version of I(python), run as I(deploy_user);
    a failure here fails with the cause and the ways out and has changed nothing outside the
    mirror, i.e. no release directory, no venv, no process killed); export (root creates
    C(releases/<release>) for the build user, C(git archive) as the deploy user piped into
    C(tar -x) as the build user under umask 026, the C(.building) marker); venv (reuse the
    project's venv when it holds C(.djdeploy-complete), else create it with C(python -m venv)
    and run the install steps under umask 022; a failed install removes the partial venv; a
    built venv is handed to the deploy user before it is marked complete); gunicorn (the venv
    link, C(bin/gunicorn) must exist); static (C(static/<release>) and its link); env (the
    release's own environment file); collectstatic; commands (each of I(commands), in order, as
    the build user in the release with its venv and the app's environment, through I(manage)
    with C(DJDEPLOY_COMMAND)); check (Django's C(check --deploy) through
    I(check_script), with I(check_accept) silenced; without I(commands) between them, the same
    run of I(check_script) does collectstatic first, one Django start-up for both, and the
    report keeps a step for each); seal (the release and its static files are
    handed to the deploy user); record (the release record, the marker dropped, C(next) pointed
    at the release).
  - Any failure after the project step removes the release directory and its static directory
    and fails with the cause and the last lines of the command's output; the live release is
    never touched.
options:
  app_root:
    description: The app's root (C(releases/), C(venvs/), C(static/), C(next) below it).
    type: path
    required: true
  release:
    description: The release id (the directory name in C(releases/) and C(static/)).
    type: str
    required: true
  commit:
    description: The full commit id to build.
    type: str
    required: true
  repo:
    description: The git repository (any URL or path the deploy user can reach).
    type: str
    required: true
  ref:
    description: The ref the commit was resolved from (recorded, shown in messages).
    type: str
    default: ""
  mirror:
    description: The bare mirror of I(repo); default C(<app_root>/shared/cache/repo.git).
    type: path
  deploy_user:
    description: Runs git and owns the mirror and, once built, the release and its venv.
    type: str
    required: true
  build_user:
    description: Runs the export, the venv creation, the installers, collectstatic and the
      deploy check.
    type: str
    required: true
  runtime_group:
    description: The app's runtime group (the build user's only supplementary group; group of
      the release and the venv).
    type: str
    required: true
  cache_dir:
    description: The build user's HOME and its installers' cache root (C(pip/), C(uv/),
      C(poetry/) below it; writable by it only).
    type: path
    required: true
  python:
    description: Interpreter the venv is created from (its version is checked against the
      project's).
    type: path
    default: /usr/bin/python3
  method:
    description: How the dependencies install; C(auto) detects, the others force a method (its
      file must exist).
    type: str
    default: auto
    choices: [auto, uv, poetry, requirements, pyproject]
  installer:
    description:
      - Installs the dependencies of the C(requirements) and C(pyproject) methods; C(pip) (the
        venv's own pip, which reads C(/etc/pip.conf)) or C(uv) (C(uv pip install --python
        <venv>/bin/python) from I(tools_dir), with I(index_url), I(extra_index_urls),
        I(ca_bundle), I(extra_args), its cache in C(<cache_dir>/uv), C(--require-hashes) when
        the requirements file has C(--hash) lines, bytecode compiled at install like pip).
      - The lock-file methods keep their tool (C(uv sync), C(poetry sync)). A venv built by one
        installer is never reused for the other (the installer is part of the venv's key).
    type: str
    default: pip
    choices: [pip, uv]
  requirements_file:
    description:
      - Requirements file relative to the repository root; empty tries C(requirements.txt),
        C(requirements/production.txt), C(requirements/prod.txt), C(requirements/base.txt).
    type: str
    default: ""
  knobs:
    description: Inventory variable names to cite in the project's error messages (keys
      C(method), C(requirements), C(python)).
    type: dict
    default: {}
  tools_dir:
    description: Venv holding uv and poetry (C(bin/uv), C(bin/poetry)).
    type: path
    default: /opt/djdeploy/tools
  extra_packages:
    description: Packages installed after the project's own (e.g. gunicorn).
    type: list
    elements: str
    default: []
  extra_args:
    description: Extra pip arguments (requirements and pyproject methods; with I(installer)
      C(uv), arguments of C(uv pip install)).
    type: list
    elements: str
    default: []
  index_url:
    description: Package index for uv, C(uv sync) and I(installer) C(uv) (pip reads
      /etc/pip.conf; Poetry uses the project's own sources); empty is PyPI.
    type: str
    default: ""
  extra_index_urls:
    description: Further indexes for uv.
    type: list
    elements: str
    default: []
  ca_bundle:
    description: CA bundle the installers verify TLS with.
    type: path
    default: /etc/ssl/certs/ca-certificates.crt
  names:
    description: Names inside a release directory (keys C(venv), C(static), C(env), C(record)).
    type: dict
  manage:
    description: The app's manage.py wrapper (collectstatic and the deploy check run it).
    type: path
  collectstatic:
    description: Run collectstatic.
    type: bool
    default: true
  commands:
    description:
      - Shell commands run after collectstatic, before the deploy check, as the build user, in
        the release directory with the release's venv first on C(PATH) and the app's
        environment (e.g. C(python manage.py compress)). The first that fails fails the build
        with its output; the release is removed.
    type: list
    elements: str
    default: []
  commands_knob:
    description: Name of the setting that lists the build commands (in messages).
    type: str
    default: release_build_commands
  check_deploy:
    description: Run Django's deploy check (I(check_script) through C(manage shell -c)).
    type: bool
    default: true
  check_script:
    description: The Python code of the deploy check (roles/release/files/check_deploy.py).
    type: str
    default: ""
  check_accept:
    description: Check IDs the deploy check may report without failing.
    type: list
    elements: str
    default: []
  check_knob:
    description: Name of the setting that lists accepted check IDs (in messages).
    type: str
    default: release_check_deploy_accept
  pip_extra_knob:
    description: Name of the setting for extra packages (in the missing-gunicorn message).
    type: str
    default: release_pip_extra_packages
  nice:
    description: Niceness of the install steps, collectstatic and the deploy check.
    type: int
    default: 10
  operator:
    description: Who runs the release (C(built_by) in the record).
    type: str
    default: unknown
attributes:
  check_mode:
    support: full
    description: Reads the mirror and the venvs and reports what the build would do.
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Build the release
  djdeploy_build:
    app_root: /srv/demo
    release: 20260101T000000Z-0123abcd
    commit: 0123abcd0123abcd0123abcd0123abcd0123abcd
    repo: git@git.example.com:demo.git
    ref: main
    deploy_user: deploy
    build_user: demo-build
    runtime_group: demo
    cache_dir: /srv/demo/shared/build-cache
    python: /usr/bin/python3
    extra_packages: [gunicorn]
    names: {venv: .djdeploy-venv, static: .djdeploy-static, env: .djdeploy.env,
            record: .djdeploy-release.json}
    manage: /usr/local/bin/demo-manage
    check_script: "{{ lookup('ansible.builtin.file', 'check_deploy.py') }}"
  register: build
"""

RETURN = r"""
release_dir:
  description: The release's directory.
  returned: always
  type: str
venv:
  description: The release's venv.
  returned: always
  type: str
venv_reused:
  description: Whether an existing complete venv was reused (no install).
  returned: always
  type: bool
mirror_updated:
  description: Whether the mirror was cloned or updated.
  returned: always
  type: bool
project:
  description: What the project step found (method, source, digest, build_system, hashes,
    dependencies, requires_python, python_version), the installer that fills the venv and
    the venv of these inputs.
  returned: once the project was read
  type: dict
record:
  description: The release record as written (id, commit, ref, repo, venv, built_at, built_by,
    install_method, installer, install_source, requires_python, python_version,
    check_accepted).
  returned: success
  type: dict
plan:
  description: What the build would do (check mode).
  returned: check mode
  type: list
  elements: str
steps:
  description: Each step run, in order, with the seconds it took.
  returned: always
  type: list
  elements: dict
  sample: [{step: mirror, seconds: 0.02}, {step: project, seconds: 0.05},
           {step: export, seconds: 0.31}]
seconds:
  description: Seconds the whole call took.
  returned: always
  type: float
"""

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, NoReturn  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_accounts import (
        Account,
        Command,
        Runner,
        lookup_account,
        lookup_gid,
        minimal_env,
        passed_env,
        run_command,
    )
    from djdeploy_files import Chown, lchown, remove_path, replace_symlink, write_atomic
    from djdeploy_git import GIT_ENV
    from djdeploy_project_lib import (
        InstallerSettings,
        InstallOptions,
        ProjectError,
        git_reader,
        inspect_project,
        install_steps,
        installer_of,
        interpreter_version,
        venv_path,
    )
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_accounts import (
        Account,
        Command,
        Runner,
        lookup_account,
        lookup_gid,
        minimal_env,
        passed_env,
        run_command,
    )
    from ansible.module_utils.djdeploy_files import (
        Chown,
        lchown,
        remove_path,
        replace_symlink,
        write_atomic,
    )
    from ansible.module_utils.djdeploy_git import GIT_ENV
    from ansible.module_utils.djdeploy_project_lib import (
        InstallerSettings,
        InstallOptions,
        ProjectError,
        git_reader,
        inspect_project,
        install_steps,
        installer_of,
        interpreter_version,
        venv_path,
    )

COMPLETE = ".djdeploy-complete"
# Modes a sealed tree keeps at most: the release as exported under umask 026 (files 0640,
# directories 0751, setgid runtime group), venvs and static files as written under umask 022.
RELEASE_MASKS = (0o751, 0o2751)
VENV_MASKS = (0o755, 0o2755)
STATIC_MASKS = (0o755, 0o755)


# reap(uid) -> number of live processes of that user that were sent SIGKILL.
Reaper = Callable[[int], int]


def processes_of(uid: int, proc: Path = Path("/proc")) -> list[int]:
    """Live (not zombie) processes whose real or effective user is uid."""
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = {
            key: value for key, _, value in (line.partition(":") for line in status.splitlines())
        }
        uids = fields.get("Uid", "").split()
        if fields.get("State", "").strip().startswith("Z") or len(uids) < 2:
            continue
        if str(uid) in uids[:2]:
            found.append(int(entry.name))
    return found


def kill_processes_of(uid: int) -> int:
    """SIGKILL every live process of a user; the number signalled."""
    killed = 0
    for pid in processes_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed += 1
    return killed


class StepError(Exception):
    """A step cannot go on; the message is the cause (the builder adds where and what now)."""


class BuildError(Exception):
    """The build failed; the message is complete (what failed, what was undone, the output)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def seal_tree(
    top: Path,
    *,
    uid: int,
    gid: int,
    build_uid: int,
    trusted_uids: set[int],
    masks: tuple[int, int],
    chown: Chown = lchown,
) -> int:
    """Hand what the build user wrote under top to uid:gid, with modes within masks.

    masks is (files, directories): write for group and others and set-id bits go (a directory
    keeps setgid when its mask has it). Entries of trusted_uids (files root wrote) stay as they
    are; any other owner (a hard link to someone else's file) is refused. Symlinks are never
    followed. Call it only when no process of the build user runs. Returns the entries handed.
    """
    file_mask, dir_mask = masks
    handed = 0

    def seal(path: Path) -> None:
        nonlocal handed
        st = path.lstat()
        if st.st_uid == build_uid:
            chown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                mask = dir_mask if stat.S_ISDIR(st.st_mode) else file_mask
                path.chmod(stat.S_IMODE(st.st_mode) & mask)
            handed += 1
        elif st.st_uid not in trusted_uids:
            raise StepError(
                f"{path} belongs to uid {st.st_uid}, neither the build user nor the deploy user"
                " (a link to another user's file?)"
            )

    seal(top)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            seal(Path(dirpath) / name)
    return handed


#: What the check script prints once collectstatic is done (DJDEPLOY_COLLECTSTATIC=1), then
#: collectstatic's seconds (files/check_deploy.py).
COLLECTED = "djdeploy: collectstatic done in"


def collected_seconds(out: str) -> float | None:
    """collectstatic's seconds from the check script's output, None when it did not finish."""
    for line in out.splitlines():
        if line.startswith(COLLECTED):
            try:
                return round(float(line[len(COLLECTED) :].split()[0]), 3)
            except (IndexError, ValueError):
                return None
    return None


def tail(text: str, lines: int) -> str:
    """The last lines of a command's output, on one line."""
    return " | ".join(line.rstrip() for line in text.strip().splitlines()[-lines:])


@dataclass
class Names:
    """Names inside a release directory (release_names)."""

    venv: str = ".djdeploy-venv"
    static: str = ".djdeploy-static"
    env: str = ".djdeploy.env"
    record: str = ".djdeploy-release.json"


@dataclass(kw_only=True)
class Inspect(InstallerSettings):
    """How the project step reads the project and installs it (the operator's settings)."""

    method: str = "auto"
    requirements_file: str = ""
    knobs: dict[str, str] = field(default_factory=dict)


@dataclass
class Project:
    """What the project step decided for this commit (the venv and its install steps)."""

    venv: str
    steps: list[dict[str, Any]]
    method: str
    source: str
    # The tool that fills the venv: pip or uv (requirements, pyproject), uv, poetry.
    installer: str = "pip"
    requires_python: str = ""
    python_version: str = ""


@dataclass
class Config:
    """What the build needs to know (the module's options, accounts resolved)."""

    app_root: Path
    release: str
    commit: str
    repo: str
    deploy: Account
    ref: str = ""
    mirror: Path | None = None
    build: Account | None = None
    runtime_gid: int = -1
    inspect: Inspect = field(default_factory=Inspect)
    names: Names = field(default_factory=Names)
    python: str = "/usr/bin/python3"
    manage: str = ""
    collectstatic: bool = True
    commands: list[str] = field(default_factory=list)
    commands_knob: str = "release_build_commands"
    check_deploy: bool = True
    check_script: str = ""
    check_accept: list[str] = field(default_factory=list)
    check_knob: str = "release_check_deploy_accept"
    pip_extra_knob: str = "release_pip_extra_packages"
    nice: int = 10
    operator: str = "unknown"
    # Variables every command gets on top of the minimal environment (proxies).
    base_env: dict[str, str] = field(default_factory=dict)

    @property
    def mirror_dir(self) -> Path:
        return self.mirror or self.app_root / "shared/cache/repo.git"

    @property
    def release_dir(self) -> Path:
        return self.app_root / "releases" / self.release

    @property
    def static_dir(self) -> Path:
        return self.app_root / "static" / self.release


@dataclass
class Report:
    """What the build did, step by step."""

    release_dir: str
    venv: str = ""
    venv_reused: bool = False
    mirror_updated: bool = False
    project: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    changed: bool = False
    # The project step's warnings (a .python-version the interpreter does not match).
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "release_dir": self.release_dir,
            "mirror_updated": self.mirror_updated,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "changed": self.changed,
        }
        if self.project:
            data["project"] = self.project
        if self.venv:
            data.update(venv=self.venv, venv_reused=self.venv_reused)
        if self.record:
            data["record"] = self.record
        return data


class Builder:
    """The build of one release. Every side effect outside the app's tree goes through
    injected callables (commands, killing the build user's processes, ownership)."""

    def __init__(
        self,
        cfg: Config,
        run: Runner = run_command,
        reap: Reaper = kill_processes_of,
        chown: Chown = lchown,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        self.run = run
        self.reap = reap
        self.chown = chown
        self.sleep = sleep
        self.clock = clock
        self.now = now
        self.report = Report(release_dir=str(cfg.release_dir))
        self._step_name = ""
        self._wrote_release = False
        # The venv this run creates, until it is complete (removed when the build fails).
        self._new_venv: Path | None = None
        # Set by the project step.
        self._project: Project | None = None

    # -- helpers ---------------------------------------------------------------------------

    @property
    def build(self) -> Account:
        if self.cfg.build is None:
            raise ValueError("build_user is required to build")
        return self.cfg.build

    @property
    def project(self) -> Project:
        if self._project is None:
            raise ValueError("the project step runs before the build")
        return self._project

    @property
    def venv(self) -> Path:
        return Path(self.project.venv)

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        self._step_name = name
        start = self.clock()
        try:
            yield
        finally:
            self.report.steps.append({"step": name, "seconds": round(self.clock() - start, 3)})

    def _env(self, account: Account, extra: dict[str, str] | None = None) -> dict[str, str]:
        return minimal_env(account, self.cfg.base_env, extra)

    def _as_deploy(self, argv: list[str]) -> tuple[int, str, str]:
        """Run a command as the deploy user (git on its mirror, the interpreter's version)."""
        deploy = self.cfg.deploy
        return self.run(Command(argv, deploy, self._env(deploy, GIT_ENV), str(self.cfg.app_root)))

    def _git(self, *args: str) -> tuple[int, str, str]:
        return self._as_deploy(["git", "--git-dir", str(self.cfg.mirror_dir), *args])

    def _has_commit(self) -> bool:
        return self._git("cat-file", "-e", f"{self.cfg.commit}^{{commit}}")[0] == 0

    def _as_build(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        umask: int = 0o022,
        source: Command | None = None,
    ) -> tuple[int, str, str]:
        """Run a command as the build user, then kill whatever it left running: root writes
        into the build user's directories only while none of its processes runs."""
        cwd = cwd or self.cfg.release_dir
        cmd = Command(argv, self.build, self._env(self.build, env), str(cwd), umask, source)
        try:
            return self.run(cmd)
        finally:
            self._reap()

    def _reap(self) -> None:
        if self.cfg.build is None:
            return
        for _ in range(50):
            if self.reap(self.cfg.build.uid) == 0:
                return
            self.sleep(0.05)
        raise StepError(f"processes of {self.cfg.build.user} keep running after being killed")

    def _make_dir(self, path: Path, uid: int, gid: int, mode: int) -> None:
        """A directory root creates for the build user (its parent is not the build user's)."""
        path.mkdir()
        self.chown(path, uid, gid)
        path.chmod(mode)

    def _write(self, path: Path, text: str) -> None:
        """A file root writes into the release: deploy user, runtime group, 0640."""
        uid, gid = self.cfg.deploy.uid, self.cfg.runtime_gid
        write_atomic(path, text, 0o640, own=lambda tmp, _fd: self.chown(tmp, uid, gid))

    def _link(self, link: Path, target: Path) -> None:
        replace_symlink(link, target)
        self.chown(link, self.cfg.deploy.uid, self.cfg.runtime_gid)

    def _seal(self, top: Path, gid: int, masks: tuple[int, int]) -> None:
        seal_tree(
            top,
            uid=self.cfg.deploy.uid,
            gid=gid,
            build_uid=self.build.uid,
            trusted_uids={self.cfg.deploy.uid, 0},
            masks=masks,
            chown=self.chown,
        )

    def _failed(self, cause: str) -> BuildError:
        cfg = self.cfg
        undone = (
            "the failed release was removed and"
            if self._wrote_release
            else "no release was written and"
        )
        return BuildError(
            f"release: building {cfg.release} ({cfg.repo}@{cfg.ref}) failed in"
            f" '{self._step_name}'; {undone} the live release keeps serving. Cause: {cause}"
        )

    def _remove_release(self) -> None:
        """Undo a failed build: its release and static directories, a venv it did not
        complete (never a live one: the release id is new). rmtree never follows a link, so
        it is safe even when a process of the build user could not be killed."""
        with suppress(StepError):
            self._reap()
        for path in (self.cfg.release_dir, self.cfg.static_dir, self._new_venv):
            if path is not None:
                remove_path(path)

    def _live_targets(self) -> set[Path]:
        links = ("current", "previous", "next", "colors/blue", "colors/green")
        return {
            (self.cfg.app_root / name).resolve()
            for name in links
            if (self.cfg.app_root / name).is_symlink()
        }

    # -- the steps -------------------------------------------------------------------------

    def _mirror(self) -> None:
        cfg = self.cfg
        with self._step("mirror"):
            if not (cfg.mirror_dir / "HEAD").exists():
                deploy = cfg.deploy
                argv = ["git", "clone", "--quiet", "--mirror", "--", cfg.repo, str(cfg.mirror_dir)]
                env = self._env(deploy, GIT_ENV)
                rc, out, err = self.run(Command(argv, deploy, env, str(cfg.app_root)))
                self.report.mirror_updated = True
                if rc != 0:
                    raise StepError(
                        f"cloning {cfg.repo} into {cfg.mirror_dir} as {deploy.user} failed:"
                        f" {tail(err or out, 20)}"
                    )
            if self._has_commit():
                return
            rc, out, err = self._git("remote", "update", "--prune")
            self.report.mirror_updated = True
            if rc != 0:
                raise StepError(
                    f"updating the mirror {cfg.mirror_dir} of {cfg.repo} as {cfg.deploy.user}"
                    f" failed: {tail(err or out, 20)}"
                )
            if not self._has_commit():
                raise StepError(
                    f"the commit {cfg.commit} is not in {cfg.repo}, even after updating the"
                    f" mirror ({cfg.mirror_dir}). Was {cfg.ref or 'the ref'} rewritten"
                    " (force-push, deleted branch) since the preflight resolved it? Run the"
                    " release again to resolve the ref anew."
                )

    def execute(self) -> Report:
        """Run every step and raise BuildError on failure: before the build (mirror, project)
        nothing outside the mirror has changed; a failed build removes the release."""
        started = self.clock()
        try:
            try:
                self._mirror()
                self.report.changed = self.report.mirror_updated
                self._inspect()
            except ProjectError as exc:
                raise BuildError(f"release: {exc}") from exc
            except Exception as exc:
                raise self._failed(str(exc) or repr(exc)) from exc
            try:
                self._reap()  # leftovers of a build that died
                self._build()
            except BuildError:
                self._remove_release()
                raise
            except Exception as exc:
                self._remove_release()
                raise self._failed(str(exc) or repr(exc)) from exc
        finally:
            self.report.seconds = self.clock() - started
        self.report.changed = True
        return self.report

    def _inspect(self) -> None:
        """The project step: read the project at the commit (git as the deploy user, from its
        mirror), check the interpreter against it and decide its venv and install steps.
        Reads only; a ProjectError says why the project cannot be built here."""
        cfg, settings = self.cfg, self.cfg.inspect
        with self._step("project"):
            reader = git_reader(self._as_deploy, str(cfg.mirror_dir), cfg.commit)
            found = inspect_project(
                reader,
                interpreter_version(self._as_deploy, cfg.python),
                python=cfg.python,
                method=settings.method,
                requirements_file=settings.requirements_file,
                knobs=settings.knobs,
            )
            options = InstallOptions(
                venvs_dir=str(cfg.app_root / "venvs"),
                release_dir=str(cfg.release_dir),
                cache_dir=self.build.home,
                nice=cfg.nice,
                **settings.installer_settings(),
            )
            venv = venv_path(found, options)
            installer = installer_of(found, options)
            self._project = Project(
                venv=venv,
                steps=install_steps(found, options),
                method=found.method,
                source=found.source,
                installer=installer,
                requires_python=found.requires_python,
                python_version=found.python_version,
            )
            details = asdict(found)
            self.report.warnings = list(details.pop("warnings"))
            self.report.project = {**details, "installer": installer, "venv": venv}

    def _build(self) -> None:
        cfg = self.cfg
        release = cfg.release_dir
        names = cfg.names
        if release.resolve() in self._live_targets():
            raise StepError(f"{release} is in use (a live or linked release); pick a new id")
        self._export()
        self._venv()
        with self._step("gunicorn"):
            self._link(release / names.venv, self.venv)
            if not (self.venv / "bin/gunicorn").exists():
                raise StepError(
                    f"the app's dependencies ({self.project.source}) do not install gunicorn. Add"
                    f" it to them, or set {cfg.pip_extra_knob}: [gunicorn] in the inventory."
                )
        with self._step("static"):
            remove_path(cfg.static_dir)
            self._make_dir(cfg.static_dir, self.build.uid, self.build.gid, 0o755)
            self._link(release / names.static, cfg.static_dir)
        with self._step("env"):
            self._write(
                release / names.env,
                f"APP_VERSION='{cfg.release}'\n"
                f"DJDEPLOY_RELEASE_ID='{cfg.release}'\n"
                f"DJDEPLOY_COMMIT='{cfg.commit}'\n",
            )
        nice = ["nice", "-n", str(cfg.nice)]
        # Nothing runs between them: one Django process does both (its start-up, 0.3 s for the
        # demo app, is most of each).
        together = cfg.collectstatic and cfg.check_deploy and not cfg.commands
        if together:
            self._collect_and_check(nice)
        elif cfg.collectstatic:
            with self._step("collectstatic"):
                rc, out, err = self._as_build(
                    [*nice, cfg.manage, "collectstatic", "--noinput", "-v", "1"],
                    env={"DJDEPLOY_RELEASE_DIR": str(release)},
                )
                if rc != 0:
                    raise StepError(f"collectstatic failed (rc {rc}): {tail(err or out, 20)}")
        if cfg.commands:
            with self._step("commands"):
                for command in cfg.commands:
                    rc, out, err = self._as_build(
                        [*nice, cfg.manage],
                        env={"DJDEPLOY_RELEASE_DIR": str(release), "DJDEPLOY_COMMAND": command},
                    )
                    if rc != 0:
                        raise StepError(
                            f"the build command {command!r} ({cfg.commands_knob}) failed"
                            f" (rc {rc}): {tail(out + err, 20)}"
                        )
        if cfg.check_deploy and not together:
            with self._step("check"):
                rc, out, err = self._check(nice, {})
                if rc != 0:
                    raise StepError(self._check_failed(out, err))
        with self._step("seal"):
            self._seal(release, cfg.runtime_gid, RELEASE_MASKS)
            self._seal(cfg.static_dir, cfg.deploy.gid, STATIC_MASKS)
        with self._step("record"):
            record = self._record()
            self._write(release / names.record, json.dumps(record) + "\n")
            (release / f"{names.record}.building").unlink(missing_ok=True)
            replace_symlink(cfg.app_root / "next", release)
            self.report.record = record

    def _check(self, nice: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        """Django's own check command; the accepted IDs are added to SILENCED_SYSTEM_CHECKS for
        this run only (files/check_deploy.py), the rest fail the build. ``env`` adds to the
        script's environment (DJDEPLOY_COLLECTSTATIC: collectstatic first)."""
        cfg = self.cfg
        return self._as_build(
            [*nice, cfg.manage, "shell", "-c", cfg.check_script],
            env={
                "DJDEPLOY_RELEASE_DIR": str(cfg.release_dir),
                "DJDEPLOY_CHECK_ACCEPT": ",".join(cfg.check_accept),
                "DJDEPLOY_CHECK_KNOB": cfg.check_knob,
                **env,
            },
        )

    def _check_failed(self, out: str, err: str) -> str:
        accepted = ", ".join(self.cfg.check_accept) or "none"
        return (
            f"Django's deploy check failed (IDs accepted in {self.cfg.check_knob}:"
            f" {accepted}): {tail(err or out, 20)}"
        )

    def _collect_and_check(self, nice: list[str]) -> None:
        """collectstatic, then the deploy check, in one run of the check script
        (DJDEPLOY_COLLECTSTATIC=1): it prints COLLECTED and collectstatic's seconds once
        collectstatic is done, which splits the time into the two steps of the report."""
        self._step_name = "collectstatic"
        start = self.clock()
        rc, out, err = self._check(nice, {"DJDEPLOY_COLLECTSTATIC": "1"})
        total = round(self.clock() - start, 3)
        collected = collected_seconds(out)
        if collected is None:
            self.report.steps.append({"step": "collectstatic", "seconds": total})
            raise StepError(f"collectstatic failed (rc {rc}): {tail(err or out, 20)}")
        collected = min(collected, total)
        self.report.steps.append({"step": "collectstatic", "seconds": collected})
        self.report.steps.append({"step": "check", "seconds": round(total - collected, 3)})
        self._step_name = "check"
        if rc != 0:
            raise StepError(self._check_failed(out, err))

    def _export(self) -> None:
        cfg = self.cfg
        with self._step("export"):
            release = cfg.release_dir
            remove_path(release)  # a leftover of this id (never live: checked above)
            # The release's group comes from releases/ (setgid runtime group).
            self._make_dir(release, self.build.uid, cfg.runtime_gid, 0o2751)
            self._wrote_release = True
            deploy = cfg.deploy
            archive = Command(
                ["git", "--git-dir", str(cfg.mirror_dir), "archive", "--format=tar", cfg.commit],
                deploy,
                self._env(deploy, GIT_ENV),
                str(cfg.app_root),
            )
            # umask 026: files 0640, directories 0751 (setgid from the release directory, so
            # group = runtime group, which reads the code; others only traverse).
            rc, out, err = self._as_build(
                ["tar", "-x", "-C", str(release)], umask=0o026, source=archive
            )
            if rc != 0:
                raise StepError(f"git archive | tar -x failed (rc {rc}): {tail(err or out, 20)}")
            marker = {"id": cfg.release, "commit": cfg.commit}
            self._write(release / f"{cfg.names.record}.building", json.dumps(marker) + "\n")

    def _venv(self) -> None:
        cfg, project, venv = self.cfg, self.project, self.venv
        self.report.venv = str(venv)
        with self._step("venv"):
            if (venv / COMPLETE).is_file():
                self.report.venv_reused = True
                return
            remove_path(venv)  # partial: its install never completed
            self._new_venv = venv
            self._make_dir(venv, self.build.uid, cfg.runtime_gid, 0o2755)
            # umask 022 explicitly: the venv's group is the runtime group (setgid), which reads
            # it and must not write it.
            rc, out, err = self._as_build([cfg.python, "-m", "venv", str(venv)])
        if rc != 0:
            self._install_failed(f"{cfg.python} -m venv", err or out)
        with self._step("install"):
            for step in project.steps:
                argv = [str(arg) for arg in step["argv"]]
                env = {str(k): str(v) for k, v in (step.get("env") or {}).items()}
                rc, out, err = self._as_build(argv, env=env)
                if rc != 0:
                    self._install_failed(project.method, err or out)
            # The venv goes to the deploy user before it is marked complete: the build user's
            # later commands (collectstatic, the check, later builds) only read it.
            self._seal(venv, cfg.runtime_gid, VENV_MASKS)
            self._write(venv / COMPLETE, f"{cfg.release}\n")
            self._new_venv = None

    def _install_failed(self, tool: str, output: str) -> NoReturn:
        raise BuildError(
            f"release: installing the dependencies of {self.cfg.release} failed; nothing was"
            f" switched, the live release keeps serving (the release and its partial venv were"
            f" removed). {tool} said: {tail(output, 15)}"
        )

    def _record(self) -> dict[str, Any]:
        cfg, project = self.cfg, self.project
        return {
            "id": cfg.release,
            "commit": cfg.commit,
            "ref": cfg.ref,
            "repo": cfg.repo,
            "venv": project.venv,
            "built_at": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "built_by": cfg.operator,
            "install_method": project.method,
            "installer": project.installer,
            "install_source": project.source,
            "requires_python": project.requires_python,
            "python_version": project.python_version,
            "check_accepted": list(cfg.check_accept),
        }

    # -- check mode ------------------------------------------------------------------------

    def plan(self) -> dict[str, Any]:
        """What execute() would do; reads only."""
        cfg = self.cfg
        plan: list[str] = []
        if not (cfg.mirror_dir / "HEAD").exists():
            plan.append(f"clone {cfg.repo} into {cfg.mirror_dir} as {cfg.deploy.user}")
        elif not self._has_commit():
            plan.append(f"update the mirror {cfg.mirror_dir} as {cfg.deploy.user}")
        build = self.build.user
        if plan:
            # The project is read from the mirror, which does not hold the commit yet.
            plan.append(
                f"read the project at {cfg.commit} as {cfg.deploy.user}, then export it into"
                f" {cfg.release_dir}, build or reuse its venv as {build}, collect static files,"
                " check and record the release"
            )
            data = self.report.as_dict()
            data.update(plan=plan, mirror_updated=True, changed=True)
            return data
        try:
            self._inspect()
        except ProjectError as exc:
            raise BuildError(f"release: {exc}") from exc
        data = self.report.as_dict()
        data["mirror_updated"] = False
        plan.append(f"export {cfg.commit} into {cfg.release_dir} as {build}")
        if (self.venv / COMPLETE).is_file():
            plan.append(f"reuse the venv {self.venv}")
        else:
            plan.append(
                f"build the venv {self.venv} as {build}"
                f" ({len(self.project.steps)} install step(s), {self.project.method}"
                f" with {self.project.installer})"
            )
        plan.append(f"collect static files into {cfg.static_dir}" if cfg.collectstatic else "")
        plan.extend(f"run the build command {command!r}" for command in cfg.commands)
        plan.append("run Django's deploy check" if cfg.check_deploy else "")
        plan.append(f"record the release, hand it to {cfg.deploy.user}, point next at it")
        data.update(
            plan=[p for p in plan if p],
            venv=str(self.venv),
            venv_reused=(self.venv / COMPLETE).is_file(),
            changed=True,
        )
        return data


# -- Ansible glue ------------------------------------------------------------------------


def config_from_params(p: dict[str, Any]) -> Config:
    """The build's configuration from the module's options (accounts looked up)."""
    deploy = lookup_account(p["deploy_user"])
    cfg = Config(
        app_root=Path(p["app_root"]),
        release=p["release"],
        commit=p["commit"],
        repo=p["repo"],
        ref=p["ref"],
        mirror=Path(p["mirror"]) if p["mirror"] else None,
        deploy=deploy,
        python=p["python"],
        manage=p["manage"] or "",
        collectstatic=p["collectstatic"],
        commands=list(p["commands"]),
        commands_knob=p["commands_knob"],
        check_deploy=p["check_deploy"],
        check_script=p["check_script"],
        check_accept=list(p["check_accept"]),
        check_knob=p["check_knob"],
        pip_extra_knob=p["pip_extra_knob"],
        nice=p["nice"],
        operator=p["operator"],
        base_env=passed_env(),
    )
    missing = [name for name in ("names", "manage") if not p[name]]
    if missing:
        raise LookupError(f"djdeploy_build needs {', '.join(missing)} to build")
    runtime_gid = lookup_gid(p["runtime_group"])
    build = lookup_account(p["build_user"], extra_groups=(runtime_gid,))
    cfg.build = Account(
        user=build.user,
        uid=build.uid,
        group=build.group,
        gid=build.gid,
        home=p["cache_dir"],
        extra_groups=build.extra_groups,
    )
    cfg.runtime_gid = runtime_gid
    cfg.inspect = Inspect(**{name: p[name] for name in Inspect.__dataclass_fields__})
    names = p["names"]
    cfg.names = Names(
        **{key: names[key] for key in Names.__dataclass_fields__ if key in names},
    )
    return cfg


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app_root": {"type": "path", "required": True},
            "release": {"type": "str", "required": True},
            "commit": {"type": "str", "required": True},
            "repo": {"type": "str", "required": True},
            "ref": {"type": "str", "default": ""},
            "mirror": {"type": "path"},
            "deploy_user": {"type": "str", "required": True},
            "build_user": {"type": "str", "required": True},
            "runtime_group": {"type": "str", "required": True},
            "cache_dir": {"type": "path", "required": True},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "method": {
                "type": "str",
                "default": "auto",
                "choices": ["auto", "uv", "poetry", "requirements", "pyproject"],
            },
            "installer": {"type": "str", "default": "pip", "choices": ["pip", "uv"]},
            "requirements_file": {"type": "str", "default": ""},
            "knobs": {"type": "dict", "default": {}},
            "tools_dir": {"type": "path", "default": "/opt/djdeploy/tools"},
            "extra_packages": {"type": "list", "elements": "str", "default": []},
            "extra_args": {"type": "list", "elements": "str", "default": []},
            "index_url": {"type": "str", "default": ""},
            "extra_index_urls": {"type": "list", "elements": "str", "default": []},
            "ca_bundle": {"type": "path", "default": "/etc/ssl/certs/ca-certificates.crt"},
            "names": {"type": "dict"},
            "manage": {"type": "path"},
            "collectstatic": {"type": "bool", "default": True},
            "commands": {"type": "list", "elements": "str", "default": []},
            "commands_knob": {"type": "str", "default": "release_build_commands"},
            "check_deploy": {"type": "bool", "default": True},
            "check_script": {"type": "str", "default": ""},
            "check_accept": {"type": "list", "elements": "str", "default": []},
            "check_knob": {"type": "str", "default": "release_check_deploy_accept"},
            "pip_extra_knob": {"type": "str", "default": "release_pip_extra_packages"},
            "nice": {"type": "int", "default": 10},
            "operator": {"type": "str", "default": "unknown"},
        },
        supports_check_mode=True,
    )
    try:
        cfg = config_from_params(module.params)
    except LookupError as exc:
        module.fail_json(msg=f"release: {exc}")
    builder = Builder(cfg)
    try:
        if module.check_mode:
            plan = builder.plan()
            _warn(module, builder.report)
            module.exit_json(**plan)
        report = builder.execute()
    except BuildError as exc:
        _warn(module, builder.report)
        module.fail_json(msg=exc.msg, **builder.report.as_dict())
    except Exception as exc:  # a crash outside execute(): report it, with what was done
        module.fail_json(
            msg=f"release: building {cfg.release} failed unexpectedly: {exc!r}",
            **builder.report.as_dict(),
        )
    _warn(module, report)
    module.exit_json(**report.as_dict())


def _warn(module: AnsibleModule, report: Report) -> None:
    for warning in report.warnings:
        module.warn(warning)


if __name__ == "__main__":
    main()
