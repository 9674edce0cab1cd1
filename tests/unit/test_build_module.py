"""The build module (roles/release/library/djdeploy_build.py) against a fake host.

The app's tree is a temporary directory; a fake runner plays git (the mirror, and the project's
files at the commit), the interpreter, tar, python -m venv, the installers, collectstatic and
the deploy check, recording each command's argv and the user it runs as; killing the build
user's processes and chown are fakes that record too. The project step is the real
module_utils/djdeploy_project_lib.py (its own tests are in test_project_lib.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .loader import load

bm = load("roles/release/library/djdeploy_build.py")
lib = load("roles/release/module_utils/djdeploy_project_lib.py")

RELEASE = "20260102T000000Z-bbbbbbbb"
COMMIT = "b" * 40
PYTHON_VERSION = "3.11.2"
VERSION_ARGV = ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"]
# The project at COMMIT, as git shows it from the mirror.
FILES = {
    "requirements.txt": "django\n",
    "pyproject.toml": '[project]\nname = "demo"\nrequires-python = ">=3.11"\n',
}
# The venv of these inputs (requirements, the interpreter's version, gunicorn as extra).
VENV_KEY = Path(
    lib.venv_path(
        lib.inspect_project(FILES.get, PYTHON_VERSION),
        lib.InstallOptions(venvs_dir="", release_dir="", extra_packages=["gunicorn"]),
    )
).name
MANAGE = "/usr/local/bin/demo-manage"
# The build user is the test's own uid, so the files the fake host writes are "its" files.
BUILD_UID = os.getuid()
DEPLOY_UID, RUNTIME_GID, BUILD_GID = 71001, 71003, 71002
PIP_ERROR = [f"pip line {i}" for i in range(30)] + [
    "ERROR: No matching distribution found for djdeploy-no-such-package==0.0.1"
]
DJANGO_CHECK = (
    "SystemCheckError: System check identified some issues:\n\nWARNINGS:\n"
    "(greetings.W001) No SMTP configuration: EMAIL_HOST is not set.\n\n"
    "System check identified 1 issue (0 silenced).\n"
    "Fix the settings, or accept a check by its ID in app_check_deploy_accept "
    "(accepted now: ['other.W999']).\n"
)


class FakeHost:
    """Plays the host's commands on the app's tree; each knob makes one thing fail."""

    def __init__(self, app_root: Path) -> None:
        self.app_root = app_root
        self.calls: list[tuple[str, list[str]]] = []
        self.commands: list[Any] = []
        self.chowns: list[tuple[Path, int, int]] = []
        self.mirror_commits: set[str] = set()
        self.remote_commits: set[str] = {COMMIT}
        self.files: dict[str, str] = dict(FILES)
        self.python_version = PYTHON_VERSION
        self.install_fails = False
        self.gunicorn = True
        self.check_fails = False
        self.collect_fails = False
        # Build commands (DJDEPLOY_COMMAND through the manage wrapper) that fail.
        self.failing_commands: set[str] = set()
        self.lingering = 0
        self.now = 0.0

    @property
    def mirror(self) -> Path:
        return self.app_root / "shared/cache/repo.git"

    def run(self, cmd: Any) -> tuple[int, str, str]:
        self.now += 0.5
        if cmd.source is not None:
            self.calls.append((cmd.source.account.user, list(cmd.source.argv)))
            self.commands.append(cmd.source)
        self.calls.append((cmd.account.user, list(cmd.argv)))
        self.commands.append(cmd)
        argv = list(cmd.argv)
        if argv[:2] == ["git", "clone"]:
            self.mirror.mkdir(parents=True)
            (self.mirror / "HEAD").write_text("ref: refs/heads/main\n")
            self.mirror_commits |= self.remote_commits
            return 0, "", ""
        if "cat-file" in argv:
            return (0 if COMMIT in self.mirror_commits else 128), "", ""
        if "remote" in argv:
            self.mirror_commits |= self.remote_commits
            return 0, "", ""
        if "show" in argv:
            commit, _, path = argv[-1].partition(":")
            if commit in self.mirror_commits and path in self.files:
                return 0, self.files[path], ""
            return 128, "", f"fatal: path '{path}' does not exist in '{commit}'\n"
        if argv == VERSION_ARGV:
            return 0, f"{self.python_version}\n", ""
        if argv[0] == "tar":
            target = Path(argv[argv.index("-C") + 1])
            (target / "demo").mkdir()
            (target / "manage.py").write_text("print('manage')\n")
            (target / "requirements.txt").write_text("django\n")
            return 0, "", ""
        if argv[1:3] == ["-m", "venv"]:
            (Path(argv[3]) / "bin").mkdir(parents=True)
            (Path(argv[3]) / "bin/python").write_text("")
            return 0, "", ""
        if "sync" in argv:  # uv sync
            venv = Path(cmd.env["UV_PROJECT_ENVIRONMENT"])
            (venv / "bin/gunicorn").write_text("#!python\n")
            return 0, "", ""
        if "pip" in argv:
            # pip runs as <venv>/bin/python -m pip, uv as uv pip install --python <venv>/bin/python
            python = argv[argv.index("--python") + 1] if "--python" in argv else argv[3]
            venv = Path(python).parent.parent
            (venv / "lib").mkdir(exist_ok=True)
            (venv / "lib/site.py").write_text("")
            if self.install_fails:
                return 1, "Collecting django\n", "\n".join(PIP_ERROR) + "\n"
            if self.gunicorn:
                (venv / "bin/gunicorn").write_text("#!python\n")
            return 0, "", ""
        if argv[-1] == MANAGE and "DJDEPLOY_COMMAND" in cmd.env:
            command = cmd.env["DJDEPLOY_COMMAND"]
            if command in self.failing_commands:
                return 2, "compressing...\n", "CommandError: compress failed on purpose\n"
            (self.app_root / "static" / RELEASE / "built.txt").write_text(command)
            return 0, "done\n", ""
        if "collectstatic" in argv:
            return self.collectstatic()
        if "shell" in argv:
            # The check script; with DJDEPLOY_COLLECTSTATIC=1, collectstatic first.
            out = ""
            if cmd.env.get("DJDEPLOY_COLLECTSTATIC") == "1":
                rc, out, err = self.collectstatic()
                if rc != 0:
                    return rc, out, err
                self.now += 0.25
                out += f"{bm.COLLECTED} 0.250 s\n"
            self.now += 0.125
            if self.check_fails:
                return 1, out, DJANGO_CHECK
            accepted = "Accepted check IDs (silenced for this check only): greetings.W001\n"
            return 0, out + accepted, ""
        raise AssertionError(f"unexpected command {argv}")

    def reap(self, uid: int) -> int:
        self.calls.append(("root", ["reap", str(uid)]))
        if self.lingering:
            self.lingering -= 1
            return 1
        return 0

    def chown(self, path: Path, uid: int, gid: int) -> None:
        self.chowns.append((path, uid, gid))

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def collectstatic(self) -> tuple[int, str, str]:
        if self.collect_fails:
            return 1, "", "CommandError: STATIC_ROOT is not a directory\n"
        static = self.app_root / "static" / RELEASE
        (static / "site").mkdir()
        (static / "site/brand.css").write_text("body {}\n")
        return 0, "1 static file copied.\n", ""

    def users_of(self, word: str) -> list[str]:
        return [user for user, argv in self.calls if word in argv]


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    root = tmp_path / "srv/demo"
    for sub in ("releases", "venvs", "static", "shared/cache", "shared/build-cache"):
        (root / sub).mkdir(parents=True)
    old = root / "releases/20260101T000000Z-aaaaaaaa"
    old.mkdir()
    (root / "current").symlink_to(old)
    (root / "next").symlink_to(old)
    return root


def make(app_root: Path, host: FakeHost, **overrides: Any) -> Any:
    deploy = bm.Account("deploy", DEPLOY_UID, "deploy", DEPLOY_UID, "/home/deploy", (DEPLOY_UID,))
    build = bm.Account(
        "demo-build",
        BUILD_UID,
        "demo-build",
        BUILD_GID,
        str(app_root / "shared/build-cache"),
        (RUNTIME_GID,),
    )
    cfg = bm.Config(
        app_root=app_root,
        release=RELEASE,
        commit=COMMIT,
        repo="/srv/git/demo.git",
        ref="main",
        deploy=deploy,
        build=build,
        runtime_gid=RUNTIME_GID,
        manage=MANAGE,
        check_script="print('check')",
        check_accept=["greetings.W001"],
        check_knob="app_check_deploy_accept",
        pip_extra_knob="app_pip_extra_packages",
        operator="alice",
        base_env={"https_proxy": "http://proxy:3128"},
        **{"inspect": bm.Inspect(extra_packages=["gunicorn"]), **overrides},
    )
    return bm.Builder(
        cfg,
        run=host.run,
        reap=host.reap,
        chown=host.chown,
        sleep=host.sleep,
        clock=host.clock,
        now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def release_dir(app_root: Path) -> Path:
    return app_root / "releases" / RELEASE


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root with its mode and (for links) target: a tree's fingerprint."""
    seen: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        target = str(path.readlink()) if path.is_symlink() else ""
        seen[str(path.relative_to(root))] = (st.st_mode, target)
    return seen


def test_a_fresh_build_runs_every_step_in_order_each_as_its_user(app_root: Path) -> None:
    host = FakeHost(app_root)
    report = make(app_root, host).execute()

    assert [s["step"] for s in report.steps] == [
        "mirror",
        "project",
        "export",
        "venv",
        "install",
        "gunicorn",
        "static",
        "env",
        "collectstatic",
        "check",
        "seal",
        "record",
    ]
    assert report.changed and report.mirror_updated and not report.venv_reused
    assert report.seconds >= sum(s["seconds"] for s in report.steps) - 0.001
    # Who runs what: git (the mirror, the project's files) and the interpreter's version as the
    # deploy user, everything that runs the app's code (or its dependencies') as the build
    # user; root only kills the build user's leftovers, once the project was read.
    commands = [(user, argv[:4]) for user, argv in host.calls if argv[0] != "reap"]
    venv = str(app_root / "venvs" / VENV_KEY)
    show = ["git", "--git-dir", str(host.mirror), "show"]
    assert commands == [
        ("deploy", ["git", "clone", "--quiet", "--mirror"]),
        ("deploy", ["git", "--git-dir", str(host.mirror), "cat-file"]),
        ("deploy", VERSION_ARGV),
        ("deploy", show),
        ("deploy", show),
        ("deploy", show),
        ("deploy", show),
        ("deploy", show),
        ("deploy", ["git", "--git-dir", str(host.mirror), "archive"]),
        ("demo-build", ["tar", "-x", "-C", str(release_dir(app_root))]),
        ("demo-build", ["/usr/bin/python3", "-m", "venv", venv]),
        ("demo-build", ["nice", "-n", "10", f"{venv}/bin/python"]),
        ("demo-build", ["nice", "-n", "10", f"{venv}/bin/python"]),
        ("demo-build", ["nice", "-n", "10", MANAGE]),
    ]
    shown = [argv[-1] for _, argv in host.calls if "show" in argv]
    assert shown == [
        f"{COMMIT}:{path}"
        for path in ("pyproject.toml", "requirements.txt", "uv.lock", "poetry.lock")
    ] + [f"{COMMIT}:.python-version"]
    # Nothing is killed (nor written) before the project was read.
    first_reap = host.calls.index(("root", ["reap", str(BUILD_UID)]))
    assert all("show" not in argv for _, argv in host.calls[first_reap:])
    assert report.project == {
        "method": "requirements",
        "source": "requirements.txt",
        "digest": lib.inspect_project(FILES.get, PYTHON_VERSION).digest,
        "build_system": False,
        "hashes": False,
        "dependencies": [],
        "requires_python": ">=3.11",
        "python_version": PYTHON_VERSION,
        "installer": "pip",
        "venv": venv,
    }
    assert report.warnings == []
    # collectstatic and the deploy check in one run of the check script (one Django start-up),
    # each with its own step and seconds.
    ran = [argv for _, argv in host.calls if argv[0] != "reap"]
    assert ran[-1][4:] == ["shell", "-c", "print('check')"]
    assert host.commands[-1].env["DJDEPLOY_COLLECTSTATIC"] == "1"
    seconds = {s["step"]: s["seconds"] for s in report.steps}
    # (each command takes 0.5 s on the fake host: its start-up goes to the check)
    assert (seconds["collectstatic"], seconds["check"]) == (0.25, 0.625)
    assert (app_root / "static" / RELEASE / "site/brand.css").exists()
    # The build user's leftovers are killed after each of its commands (root writes into its
    # directories only while none of its processes runs).
    for i, (user, argv) in enumerate(host.calls):
        if user == "demo-build":
            assert host.calls[i + 1] == ("root", ["reap", str(BUILD_UID)]), argv
    by_argv = {tuple(c.argv[:2]): c for c in host.commands}
    tar = by_argv[("tar", "-x")]
    assert tar.umask == 0o026 and tar.source.argv[-1] == COMMIT
    assert all(c.umask == 0o022 for c in host.commands if c.argv[0] in ("nice", "/usr/bin/python3"))
    # Each user's own minimal environment: HOME, the proxies, the step's own variables.
    assert tar.env["HOME"] == str(app_root / "shared/build-cache")
    assert tar.source.env["HOME"] == "/home/deploy"
    assert tar.source.env["GIT_TERMINAL_PROMPT"] == "0"
    assert tar.env["https_proxy"] == "http://proxy:3128"
    assert set(tar.env) == {"HOME", "USER", "LOGNAME", "PATH", "LANG", "https_proxy"}
    assert tar.account.extra_groups == (RUNTIME_GID,)
    pip_gunicorn = next(c for c in host.commands if c.argv[-1] == "gunicorn")
    assert "--no-input" in pip_gunicorn.argv
    assert "--cache-dir" in pip_gunicorn.argv
    requirements = next(c for c in host.commands if "-r" in c.argv)
    assert requirements.argv[-1] == f"{release_dir(app_root)}/requirements.txt"
    version = next(c for c in host.commands if c.argv == VERSION_ARGV)
    assert version.env["HOME"] == "/home/deploy" and version.cwd == str(app_root)
    check = host.commands[-1]
    assert check.env["DJDEPLOY_CHECK_ACCEPT"] == "greetings.W001"
    assert check.env["DJDEPLOY_CHECK_KNOB"] == "app_check_deploy_accept"
    assert check.env["DJDEPLOY_RELEASE_DIR"] == str(release_dir(app_root))

    rel = release_dir(app_root)
    assert (rel / ".djdeploy-venv").readlink() == Path(venv)
    assert (rel / ".djdeploy-static").readlink() == app_root / "static" / RELEASE
    assert (app_root / "next").readlink() == rel
    assert (rel / ".djdeploy.env").read_text() == (
        f"APP_VERSION='{RELEASE}'\nDJDEPLOY_RELEASE_ID='{RELEASE}'\nDJDEPLOY_COMMIT='{COMMIT}'\n"
    )
    assert not (rel / ".djdeploy-release.json.building").exists()
    assert (Path(venv) / ".djdeploy-complete").read_text() == f"{RELEASE}\n"
    record = json.loads((rel / ".djdeploy-release.json").read_text())
    assert record == report.record
    assert record == {
        "id": RELEASE,
        "commit": COMMIT,
        "ref": "main",
        "repo": "/srv/git/demo.git",
        "venv": venv,
        "built_at": "2026-01-02T03:04:05Z",
        "built_by": "alice",
        "install_method": "requirements",
        "installer": "pip",
        "install_source": "requirements.txt",
        "requires_python": ">=3.11",
        "python_version": "3.11.2",
        "check_accepted": ["greetings.W001"],
    }
    for name in (".djdeploy.env", ".djdeploy-release.json"):
        assert stat.S_IMODE((rel / name).stat().st_mode) == 0o640
    assert stat.S_IMODE(rel.stat().st_mode) == 0o2751
    assert stat.S_IMODE((app_root / "static" / RELEASE).stat().st_mode) == 0o755
    # Ownership: the build user gets the directories root creates for it, then the deploy user
    # gets everything the build user wrote (release, venv, static files); root's own files go
    # straight to the deploy user and the runtime group.
    owners = {path: (uid, gid) for path, uid, gid in host.chowns}  # the last chown wins
    first: dict[Path, tuple[int, int]] = {}
    for path, uid, gid in host.chowns:
        first.setdefault(path, (uid, gid))
    assert first[rel] == (BUILD_UID, RUNTIME_GID)
    assert first[Path(venv)] == (BUILD_UID, RUNTIME_GID)
    assert first[app_root / "static" / RELEASE] == (BUILD_UID, BUILD_GID)
    assert owners[rel] == owners[rel / "manage.py"] == (DEPLOY_UID, RUNTIME_GID)
    assert owners[Path(venv) / "bin/gunicorn"] == (DEPLOY_UID, RUNTIME_GID)
    assert owners[app_root / "static" / RELEASE / "site/brand.css"] == (DEPLOY_UID, DEPLOY_UID)
    written = [p for p, _, _ in host.chowns if p.name.endswith(".djdeploy-tmp")]
    assert written and all(owners[p] == (DEPLOY_UID, RUNTIME_GID) for p in written)


def test_the_venv_is_handed_over_before_it_is_marked_complete(
    app_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = FakeHost(app_root)
    order: list[str] = []
    seal = bm.seal_tree

    def tracing_seal(top: Path, **kw: Any) -> int:
        order.append(f"seal {top.name}")
        return int(seal(top, **kw))

    host_chown = host.chown

    def tracing_chown(path: Path, uid: int, gid: int) -> None:
        if ".djdeploy-complete" in path.name:
            order.append("complete")
        host_chown(path, uid, gid)

    builder = make(app_root, host)
    builder.chown = tracing_chown
    monkeypatch.setattr(bm, "seal_tree", tracing_seal)
    builder.execute()
    assert order == [f"seal {VENV_KEY}", "complete", f"seal {RELEASE}", f"seal {RELEASE}"]


def test_a_complete_venv_is_reused_without_installing(app_root: Path) -> None:
    venv = app_root / "venvs" / VENV_KEY
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/gunicorn").write_text("")
    (venv / ".djdeploy-complete").write_text("20260101T000000Z-aaaaaaaa\n")
    host = FakeHost(app_root)
    host.mirror_commits = {COMMIT}
    (host.mirror).mkdir(parents=True)
    (host.mirror / "HEAD").write_text("")
    report = make(app_root, host).execute()

    assert report.venv_reused and not report.mirror_updated
    assert "install" not in [s["step"] for s in report.steps]
    assert not any("venv" in argv or "pip" in argv for _, argv in host.calls)
    assert not any(path == venv or venv in path.parents for path, _, _ in host.chowns)
    assert (release_dir(app_root) / ".djdeploy-venv").readlink() == venv
    assert (venv / ".djdeploy-complete").read_text() == "20260101T000000Z-aaaaaaaa\n"


def test_a_failed_install_removes_the_partial_venv_and_the_release(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.install_fails = True
    builder = make(app_root, host)
    with pytest.raises(bm.BuildError) as failed:
        builder.execute()

    msg = failed.value.msg
    assert msg.startswith(f"release: installing the dependencies of {RELEASE} failed;")
    assert "the live release keeps serving" in msg
    assert "requirements said: " in msg
    assert "djdeploy-no-such-package==0.0.1" in msg
    assert "pip line 16 |" in msg and "pip line 15 |" not in msg  # the last 15 lines
    assert not (app_root / "venvs" / VENV_KEY).exists()
    assert not release_dir(app_root).exists()
    assert not (app_root / "static" / RELEASE).exists()
    assert (app_root / "next").readlink().name == "20260101T000000Z-aaaaaaaa"
    assert not host.users_of("collectstatic")
    assert [s["step"] for s in builder.report.steps][-1] == "install"


def test_missing_gunicorn_fails_with_the_way_out(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.gunicorn = False
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()

    msg = failed.value.msg
    assert f"release: building {RELEASE} (/srv/git/demo.git@main) failed in 'gunicorn'" in msg
    assert "the failed release was removed and the live release keeps serving" in msg
    assert (
        "the app's dependencies (requirements.txt) do not install gunicorn. Add it to them, or"
        " set app_pip_extra_packages: [gunicorn] in the inventory."
    ) in msg
    assert not release_dir(app_root).exists()
    # The venv itself is complete (the install succeeded) and stays for the next release.
    assert (app_root / "venvs" / VENV_KEY / ".djdeploy-complete").exists()


def test_a_failed_deploy_check_shows_djangos_message_and_the_knob(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.check_fails = True
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()

    msg = failed.value.msg
    assert "failed in 'check'" in msg
    assert "(greetings.W001) No SMTP configuration" in msg
    assert "IDs accepted in app_check_deploy_accept: greetings.W001" in msg
    assert "Fix the settings, or accept a check by its ID in app_check_deploy_accept" in msg
    assert not release_dir(app_root).exists()
    assert not (app_root / "static" / RELEASE).exists()
    assert (app_root / "next").readlink().name == "20260101T000000Z-aaaaaaaa"
    assert (app_root / "current").readlink().name == "20260101T000000Z-aaaaaaaa"


def test_a_failed_collectstatic_in_the_check_script_is_collectstatics(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.collect_fails = True
    builder = make(app_root, host)
    with pytest.raises(bm.BuildError) as failed:
        builder.execute()

    msg = failed.value.msg
    assert "failed in 'collectstatic'" in msg
    assert "collectstatic failed (rc 1): CommandError: STATIC_ROOT is not a directory" in msg
    assert [s["step"] for s in builder.report.steps][-1] == "collectstatic"
    assert not release_dir(app_root).exists()
    assert not (app_root / "static" / RELEASE).exists()
    assert (app_root / "next").readlink().name == "20260101T000000Z-aaaaaaaa"


def test_collectstatic_runs_on_its_own_without_the_check_or_before_build_commands(
    app_root: Path,
) -> None:
    host = FakeHost(app_root)
    report = make(app_root, host, check_deploy=False).execute()
    assert [s["step"] for s in report.steps][-3:] == ["collectstatic", "seal", "record"]
    ran = [argv for _, argv in host.calls if argv[0] != "reap"]
    assert ran[-1][4:] == ["collectstatic", "--noinput", "-v", "1"]

    app_root_2 = app_root.parent / "other"
    shutil.copytree(app_root, app_root_2, symlinks=True)
    shutil.rmtree(release_dir(app_root_2))
    shutil.rmtree(app_root_2 / "static" / RELEASE)
    host = FakeHost(app_root_2)
    make(app_root_2, host, commands=["npm run build"]).execute()
    ran = [argv for _, argv in host.calls if argv[0] != "reap"]
    assert ran[-3][4:] == ["collectstatic", "--noinput", "-v", "1"]
    assert host.commands[-2].env["DJDEPLOY_COMMAND"] == "npm run build"
    assert ran[-1][4:] == ["shell", "-c", "print('check')"]
    assert "DJDEPLOY_COLLECTSTATIC" not in host.commands[-1].env


def test_collectstatics_seconds_are_read_from_the_check_scripts_output() -> None:
    assert bm.collected_seconds(f"1 static file copied.\n{bm.COLLECTED} 0.4567 s\nok\n") == 0.457
    assert bm.collected_seconds("1 static file copied.\n") is None
    assert bm.collected_seconds(f"{bm.COLLECTED} soon\n") is None


BUILD_COMMANDS = ["python manage.py compress", "npm run build"]


def test_build_commands_run_after_collectstatic_as_the_build_user_in_the_release(
    app_root: Path,
) -> None:
    host = FakeHost(app_root)
    report = make(app_root, host, commands=BUILD_COMMANDS).execute()

    steps = [s["step"] for s in report.steps]
    assert steps[steps.index("collectstatic") + 1 : steps.index("check")] == ["commands"]
    runs = [c for c in host.commands if "DJDEPLOY_COMMAND" in c.env]
    assert [c.env["DJDEPLOY_COMMAND"] for c in runs] == BUILD_COMMANDS
    for cmd in runs:
        assert cmd.account.user == "demo-build"
        assert list(cmd.argv) == ["nice", "-n", "10", MANAGE]
        assert cmd.env["DJDEPLOY_RELEASE_DIR"] == str(release_dir(app_root))
        assert cmd.cwd == str(release_dir(app_root))
    # What a command wrote is sealed with the release's static files.
    assert (app_root / "static" / RELEASE / "built.txt").read_text() == "npm run build"
    assert (app_root / "next").readlink().name == RELEASE


def test_a_failing_build_command_removes_the_release_and_says_which(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.failing_commands = {"python manage.py compress"}
    builder = make(app_root, host, commands=BUILD_COMMANDS, commands_knob="app_build_commands")
    with pytest.raises(bm.BuildError) as failed:
        builder.execute()

    msg = failed.value.msg
    assert "failed in 'commands'" in msg
    assert "the build command 'python manage.py compress' (app_build_commands) failed (rc 2)" in msg
    assert "compressing... | CommandError: compress failed on purpose" in msg
    assert "the live release keeps serving" in msg
    # The next command never ran, the release is gone, the deploy check did not run.
    assert [c.env["DJDEPLOY_COMMAND"] for c in host.commands if "DJDEPLOY_COMMAND" in c.env] == [
        "python manage.py compress"
    ]
    assert not release_dir(app_root).exists()
    assert not (app_root / "static" / RELEASE).exists()
    assert (app_root / "next").readlink().name == "20260101T000000Z-aaaaaaaa"


def test_a_commit_missing_after_the_update_fails_before_any_export(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.mirror.mkdir(parents=True)
    (host.mirror / "HEAD").write_text("")
    host.remote_commits = {"c" * 40}
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()

    msg = failed.value.msg
    assert "failed in 'mirror'; no release was written" in msg
    assert f"the commit {COMMIT} is not in /srv/git/demo.git, even after updating" in msg
    assert "Was main rewritten" in msg
    assert [argv[3] for _, argv in host.calls if argv[0] == "git"] == [
        "cat-file",
        "remote",
        "cat-file",
    ]
    assert host.users_of("--git-dir") == ["deploy"] * 3
    assert not host.users_of("-x")
    assert not release_dir(app_root).exists()


def test_a_process_the_build_leaves_running_fails_the_build(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.lingering = 10_000
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()
    assert "processes of demo-build keep running" in failed.value.msg
    assert not release_dir(app_root).exists()


def outside_the_mirror(app_root: Path) -> dict[str, tuple[int, str]]:
    return {
        path: seen
        for path, seen in snapshot(app_root).items()
        if not path.startswith("shared/cache/repo.git")
    }


def test_a_failing_project_check_changes_nothing_outside_the_mirror(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.files["pyproject.toml"] = '[project]\nname = "demo"\nrequires-python = ">=3.99"\n'
    # A leftover of the same id (a build that died) is not touched either.
    leftover = release_dir(app_root)
    leftover.mkdir()
    (leftover / "manage.py").write_text("")
    before = outside_the_mirror(app_root)
    builder = make(app_root, host)
    with pytest.raises(bm.BuildError) as failed:
        builder.execute()

    # The message of the project check, as it was when it was a module of its own.
    assert failed.value.msg == (
        "release: the project requires Python >=3.99 (requires-python in pyproject.toml) but"
        " /usr/bin/python3 on this host is Python 3.11.2. Point app_python at an interpreter on"
        " the hosts that satisfies it (e.g. Debian 13's /usr/bin/python3 is 3.13, Debian 12's is"
        " 3.11), or release a commit whose requirement this interpreter meets."
    )
    assert outside_the_mirror(app_root) == before
    assert host.chowns == []
    assert {user for user, _ in host.calls} == {"deploy"}  # no reap, nothing as the build user
    assert not host.users_of("archive")
    assert [s["step"] for s in builder.report.steps] == ["mirror", "project"]
    report = builder.report.as_dict()
    assert report["changed"] and report["mirror_updated"]  # the clone happened
    assert "project" not in report and "venv" not in report


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"manage.py": ""},
            "release: found nothing to install the dependencies from: no uv.lock, poetry.lock,",
        ),
        ({"pyproject.toml": "[project"}, "release: pyproject.toml is not valid TOML: "),
    ],
    ids=["nothing-to-install", "invalid-toml"],
)
def test_every_project_error_fails_before_the_build(
    app_root: Path, files: dict[str, str], message: str
) -> None:
    host = FakeHost(app_root)
    host.files = files
    before = outside_the_mirror(app_root)
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()
    assert failed.value.msg.startswith(message)
    assert outside_the_mirror(app_root) == before


def test_a_forced_method_names_the_inventory_knob(app_root: Path) -> None:
    host = FakeHost(app_root)
    inspect = bm.Inspect(method="poetry", knobs={"method": "app_install_method"})
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host, inspect=inspect).execute()
    assert failed.value.msg.startswith(
        "release: app_install_method is 'poetry' but the repository has no poetry.lock."
    )
    assert not release_dir(app_root).exists()


def test_an_interpreter_that_does_not_run_fails_before_the_build(app_root: Path) -> None:
    host = FakeHost(app_root)
    run = host.run

    def no_python(cmd: Any) -> tuple[int, str, str]:
        if cmd.argv == VERSION_ARGV:
            return 127, "", "python3: not found\n"
        return run(cmd)

    host.run = no_python  # type: ignore[method-assign]
    before = outside_the_mirror(app_root)
    with pytest.raises(bm.BuildError) as failed:
        make(app_root, host).execute()
    assert failed.value.msg == (
        "release: cannot run the interpreter /usr/bin/python3: python3: not found"
    )
    assert outside_the_mirror(app_root) == before


def test_a_python_version_file_the_interpreter_exceeds_warns_and_builds(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.files[".python-version"] = "3.10\n"
    report = make(app_root, host).execute()
    assert report.warnings == [".python-version asks for 3.10; the venv is built with 3.11.2"]
    assert (app_root / "next").readlink() == release_dir(app_root)


def test_a_uv_project_syncs_its_lock_as_the_build_user(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.files = {"uv.lock": "version = 1\n", "pyproject.toml": FILES["pyproject.toml"]}
    inspect = bm.Inspect(index_url="https://pypi.example/simple", extra_packages=[])
    report = make(app_root, host, inspect=inspect).execute()

    assert report.project["method"] == "uv" and report.record["install_source"] == "uv.lock"
    sync = next(c for c in host.commands if "sync" in c.argv)
    assert sync.account.user == "demo-build"
    assert sync.argv[:4] == ["nice", "-n", "10", "/opt/djdeploy/tools/bin/uv"]
    # The step's own variables on top of the build user's minimal environment.
    assert sync.env["UV_PROJECT_ENVIRONMENT"] == report.venv
    assert sync.env["UV_CACHE_DIR"] == f"{app_root}/shared/build-cache/uv"
    assert sync.env["UV_DEFAULT_INDEX"] == "https://pypi.example/simple"
    assert sync.env["HOME"] == str(app_root / "shared/build-cache")
    assert sync.env["https_proxy"] == "http://proxy:3128"


def test_the_uv_installer_fills_a_venv_of_its_own_and_is_recorded(app_root: Path) -> None:
    host = FakeHost(app_root)
    inspect = bm.Inspect(installer="uv", extra_packages=["gunicorn"], index_url="https://i.example")
    report = make(app_root, host, inspect=inspect).execute()

    assert Path(report.venv).name != VENV_KEY, "a venv pip built is not reused for uv"
    assert report.project["installer"] == report.record["installer"] == "uv"
    assert report.record["install_method"] == "requirements"
    installs = [c for c in host.commands if "install" in c.argv]
    assert [c.account.user for c in installs] == ["demo-build", "demo-build"]
    requirements, extra = installs
    uv_pip = ["nice", "-n", "10", "/opt/djdeploy/tools/bin/uv", "pip", "install", "--python"]
    assert requirements.argv == [
        *uv_pip,
        f"{report.venv}/bin/python",
        "-r",
        f"{release_dir(app_root)}/requirements.txt",
    ]
    assert extra.argv == [*uv_pip, f"{report.venv}/bin/python", "gunicorn"]
    assert requirements.env["UV_CACHE_DIR"] == f"{app_root}/shared/build-cache/uv"
    assert requirements.env["UV_DEFAULT_INDEX"] == "https://i.example"
    assert requirements.env["UV_LINK_MODE"] == "copy"
    assert requirements.env["https_proxy"] == "http://proxy:3128"
    assert not any("-m" in c.argv and "pip" in c.argv for c in host.commands)
    assert (Path(report.venv) / ".djdeploy-complete").is_file()


def test_check_mode_reads_the_project_when_the_mirror_holds_the_commit(app_root: Path) -> None:
    host = FakeHost(app_root)
    host.mirror.mkdir(parents=True)
    (host.mirror / "HEAD").write_text("")
    host.mirror_commits = {COMMIT}
    before = snapshot(app_root)
    plan = make(app_root, host).plan()

    assert plan["changed"] and not plan["mirror_updated"]
    venv = app_root / "venvs" / VENV_KEY
    assert plan["plan"][0] == f"export {COMMIT} into {release_dir(app_root)} as demo-build"
    assert plan["plan"][1] == (
        f"build the venv {venv} as demo-build (2 install step(s), requirements with pip)"
    )
    assert plan["venv"] == str(venv) and plan["project"]["method"] == "requirements"
    assert {user for user, _ in host.calls} == {"deploy"} and host.chowns == []
    assert snapshot(app_root) == before

    host.files["pyproject.toml"] = '[project]\nrequires-python = "<3"\n'
    with pytest.raises(bm.BuildError, match=r"^release: the project requires Python <3 "):
        make(app_root, host).plan()
    assert snapshot(app_root) == before


def test_the_options_reach_the_project_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def account(user: str, *, extra_groups: tuple[int, ...] | None = None) -> Any:
        return bm.Account(user, DEPLOY_UID, user, DEPLOY_UID, f"/home/{user}", extra_groups or ())

    monkeypatch.setattr(bm, "lookup_account", account)
    monkeypatch.setattr(bm, "lookup_gid", lambda name: RUNTIME_GID)
    params = {
        "app_root": "/srv/demo",
        "release": RELEASE,
        "commit": COMMIT,
        "repo": "/srv/git/demo.git",
        "ref": "main",
        "mirror": None,
        "deploy_user": "deploy",
        "build_user": "demo-build",
        "runtime_group": "demo",
        "cache_dir": "/srv/demo/shared/build-cache",
        "python": "/usr/bin/python3",
        "method": "uv",
        "installer": "uv",
        "requirements_file": "reqs/live.txt",
        "knobs": {"python": "app_python"},
        "tools_dir": "/opt/tools",
        "extra_packages": ["gunicorn"],
        "extra_args": ["--no-binary", ":all:"],
        "index_url": "https://idx.example/simple",
        "extra_index_urls": ["https://more.example/simple"],
        "ca_bundle": "/etc/ca.pem",
        "names": {"venv": ".v"},
        "manage": MANAGE,
        "collectstatic": True,
        "commands": ["python manage.py compress"],
        "commands_knob": "app_build_commands",
        "check_deploy": True,
        "check_script": "",
        "check_accept": [],
        "check_knob": "app_check_deploy_accept",
        "pip_extra_knob": "app_pip_extra_packages",
        "nice": 5,
        "operator": "alice",
    }
    cfg = bm.config_from_params(params)
    assert cfg.inspect == bm.Inspect(
        method="uv",
        installer="uv",
        requirements_file="reqs/live.txt",
        knobs={"python": "app_python"},
        tools_dir="/opt/tools",
        extra_packages=["gunicorn"],
        extra_args=["--no-binary", ":all:"],
        index_url="https://idx.example/simple",
        extra_index_urls=["https://more.example/simple"],
        ca_bundle="/etc/ca.pem",
    )
    assert cfg.build.home == "/srv/demo/shared/build-cache"
    assert cfg.commands == ["python manage.py compress"]
    assert cfg.commands_knob == "app_build_commands"
    assert cfg.names.venv == ".v"


def test_check_mode_reports_and_changes_nothing(app_root: Path) -> None:
    host = FakeHost(app_root)
    before = snapshot(app_root)
    plan = make(app_root, host).plan()

    assert plan["changed"] and plan["mirror_updated"]
    assert plan["plan"][0] == f"clone /srv/git/demo.git into {host.mirror} as deploy"
    # The project is read from the mirror, which does not hold the commit yet.
    assert plan["plan"][1].startswith(f"read the project at {COMMIT} as deploy, then export")
    assert "venv as demo-build" in plan["plan"][1]
    assert host.calls == [] and host.chowns == []
    assert snapshot(app_root) == before


def test_seal_hands_the_tree_over_within_the_masks_without_following_links(
    tmp_path: Path,
) -> None:
    top = tmp_path / "venv"
    (top / "bin").mkdir(parents=True)
    (top / "bin/tool").write_text("")
    (top / "bin/tool").chmod(0o4777)
    (top / "lib").mkdir()
    (top / "lib").chmod(0o2777)
    outside = tmp_path / "outside"
    outside.write_text("")
    outside.chmod(0o666)
    (top / "escape").symlink_to(outside)
    chowns: list[tuple[Path, int, int]] = []

    handed = bm.seal_tree(
        top,
        uid=DEPLOY_UID,
        gid=RUNTIME_GID,
        build_uid=BUILD_UID,
        trusted_uids={DEPLOY_UID},
        masks=bm.VENV_MASKS,
        chown=lambda p, u, g: chowns.append((p, u, g)),
    )
    assert handed == 5
    assert stat.S_IMODE((top / "bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((top / "lib").stat().st_mode) == 0o2755
    assert stat.S_IMODE(outside.stat().st_mode) == 0o666  # the link was not followed
    assert (top / "escape", DEPLOY_UID, RUNTIME_GID) in chowns
    assert outside not in [p for p, _, _ in chowns]


def test_seal_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    with pytest.raises(bm.StepError, match="belongs to uid"):
        bm.seal_tree(
            tmp_path / "top",
            uid=DEPLOY_UID,
            gid=RUNTIME_GID,
            build_uid=BUILD_UID + 1,
            trusted_uids={DEPLOY_UID},
            masks=bm.RELEASE_MASKS,
            chown=lambda p, u, g: None,
        )


def test_processes_of_reads_proc(tmp_path: Path) -> None:
    def proc(pid: str, uid: str, state: str = "S (sleeping)") -> None:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "status").write_text(
            f"Name:\tpip\nState:\t{state}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
        )

    proc("10", "998")
    proc("11", "999")
    proc("12", "998", "Z (zombie)")
    (tmp_path / "self").mkdir()
    assert bm.processes_of(998, tmp_path) == [10]


def test_tail_keeps_the_last_lines_on_one_line() -> None:
    assert bm.tail("a\nb\nc\n", 2) == "b | c"
