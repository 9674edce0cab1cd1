"""The layout module (roles/release/library/djdeploy_layout.py) on tmp_path.

Users and groups are a dictionary that a fake runner changes as groupadd, useradd and usermod
would; chown only records its calls, and the names of the tree map to the test's own uid and
gid unless a test wants an owner to differ, so nothing depends on the machine's users.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from .loader import load, run_module

lay = load("roles/release/library/djdeploy_layout.py")

UID, GID = os.getuid(), os.getgid()
SECRET = "django-insecure-this-is-the-secret-key-of-the-tests-0123456789"
ENV = f"# Ansible managed\nDJANGO_SECRET_KEY='{SECRET}'\nDB_PASSWORD='hunter2-hunter2'\n"
NOLOGIN = "/usr/sbin/nologin"
# useradd's last arguments: password locked, no home created, a system user.
LOCKED_SYSTEM = ["-p", "!", "-M", "-r", "demo-build"]


class Accounts:
    """Users and groups in dictionaries."""

    def __init__(self) -> None:
        self.users: dict[str, Any] = {}
        self.group_entries: dict[str, Any] = {}

    def add_group(self, name: str, gid: int, members: tuple[str, ...] = ()) -> None:
        self.group_entries[name] = lay.GroupEntry(name, gid, members)

    def add_user(self, name: str, uid: int, gid: int, home: str, shell: str) -> None:
        self.users[name] = lay.UserEntry(name, uid, gid, home, shell)

    def user(self, name: str) -> Any:
        return self.users.get(name)

    def group(self, name: str) -> Any:
        return self.group_entries.get(name)

    def groups(self) -> list[Any]:
        return list(self.group_entries.values())

    def supplementary(self, name: str) -> list[str]:
        primary = self.users[name].gid
        return sorted(g.name for g in self.groups() if name in g.members and g.gid != primary)

    def set_members(self, user: str, groups: list[str]) -> None:
        for g in list(self.group_entries.values()):
            members = tuple(m for m in g.members if m != user)
            if g.name in groups:
                members += (user,)
            self.group_entries[g.name] = lay.GroupEntry(g.name, g.gid, members)


class Runner:
    """Plays groupadd, useradd and usermod against Accounts."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.calls: list[list[str]] = []
        self.fail: str = ""

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        if self.fail and argv[0] == self.fail:
            return 9, "", f"{argv[0]}: cannot lock /etc/passwd; try again later."
        if argv[0] == "systemd-analyze":
            if argv[-1] == "every tuesday":
                refused = "Failed to parse calendar specification 'every tuesday': Invalid argument"
                return 1, "", refused
            return 0, f"  Original form: {argv[-1]}\n", ""
        a = self.accounts
        flags = dict(zip(argv[1:-1:2], argv[2:-1:2], strict=False))
        name = argv[-1]
        if argv[0] == "groupadd":
            a.add_group(name, 900 + len(a.group_entries))
        elif argv[0] == "useradd":
            gid = a.group_entries[flags["-g"]].gid
            a.add_user(name, 800 + len(a.users), gid, flags["-d"], flags["-s"])
            a.set_members(name, flags.get("-G", "").split(",") if "-G" in flags else [])
        elif argv[0] == "usermod":
            user = a.users[name]
            gid = a.group_entries[flags["-g"]].gid if "-g" in flags else user.gid
            home, shell = flags.get("-d", user.home), flags.get("-s", user.shell)
            a.add_user(name, user.uid, gid, home, shell)
            if "-G" in flags:
                a.set_members(name, [g for g in flags["-G"].split(",") if g])
        return 0, "", ""


class Chown:
    """Records chown calls; changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, int, int, bool]] = []

    def __call__(
        self, target: int | str, uid: int, gid: int, /, *, follow_symlinks: bool = True
    ) -> None:
        self.calls.append((target, uid, gid, follow_symlinks))


def host_accounts() -> Accounts:
    """deploy, demo (runtime) and www-data are the test's own uid and gid; demo-build is not."""
    a = Accounts()
    a.add_group("deploy", GID)
    a.add_group("demo", GID)
    a.add_group("www-data", GID)
    a.add_group("root", GID)
    a.add_user("deploy", UID, GID, "/home/deploy", "/bin/bash")
    a.add_user("demo", UID, GID, "/srv/demo", NOLOGIN)
    a.add_user("root", UID, GID, "/root", "/bin/bash")
    return a


def tree() -> list[dict[str, str]]:
    """The app tree as layout.yml passes it."""
    d = "deploy"
    rows = [
        ("", d, d, "0755"),
        ("releases", d, "demo", "2751"),
        ("venvs", d, "demo", "2750"),
        ("colors", d, "demo", "0755"),
        ("static", d, d, "0755"),
        ("shared", d, "demo", "0751"),
        ("shared/overlay", d, "demo", "0750"),
        ("shared/media", "demo", "www-data", "2750"),
        ("shared/cache", d, d, "0700"),
        ("shared/build-cache", "demo-build", "demo-build", "0700"),
    ]
    return [{"path": p, "owner": o, "group": g, "mode": m} for p, o, g, m in rows]


def params(root: Path, **overrides: Any) -> dict[str, Any]:
    bin_dir = root.parent / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    p: dict[str, Any] = {
        "build_user": "demo-build",
        "build_home": str(root / "shared/build-cache"),
        "build_groups": ["demo"],
        "build_shell": NOLOGIN,
        "root": str(root),
        "directories": tree(),
        "absent": [
            str(root / "shared/cache" / n) for n in ("pip", "uv", "poetry", "poetry-config")
        ],
        "releases_dir": str(root / "releases"),
        "link_names": [
            {"old": ".venv", "new": ".djdeploy-venv"},
            {"old": "static", "new": ".djdeploy-static"},
        ],
        "links_owner": "deploy",
        "files": [
            {
                "path": str(root / "shared/.env"),
                "content": ENV,
                "owner": "deploy",
                "group": "demo",
                "mode": "0640",
                "config": True,
            },
            {
                "path": str(root / "shared/overlay/djdeploy_overlay.py"),
                "content": "# overlay\n",
                "owner": "deploy",
                "group": "demo",
                "mode": "0640",
                "config": True,
                "enabled": False,
            },
            {
                "path": str(bin_dir / "demo-manage"),
                "content": "#!/bin/sh\nexec true\n",
                "owner": "root",
                "group": "root",
                "mode": "0755",
            },
        ],
    }
    p.update(overrides)
    return p


COMMIT_MAIN = "a" * 40
LS_REMOTE = f"{COMMIT_MAIN}\trefs/heads/main\n{'b' * 40}\trefs/tags/v1\n"


class Host:
    """The accounts, the runner and chown of one fake host; layout() makes a module run."""

    def __init__(self, root: Path, accounts: Accounts | None = None) -> None:
        self.root = root
        self.accounts = accounts or host_accounts()
        self.runner = Runner(self.accounts)
        self.chown = Chown()
        # git ls-remote as the deploy user: (user, argv) of each call; answers (rc, out, err).
        self.git_calls: list[tuple[str, list[str]]] = []
        self.git_answer: tuple[int, str, str] = (0, LS_REMOTE, "")

    def git(self, user: str, argv: list[str]) -> tuple[int, str, str]:
        self.git_calls.append((user, argv))
        return self.git_answer

    def layout(self, check_mode: bool = False, **overrides: Any) -> Any:
        layout = lay.Layout(
            lay.Config.from_params(params(self.root, **overrides)),
            run=self.runner,
            accounts=self.accounts,
            chown=self.chown,
            git=self.git,
            check_mode=check_mode,
        )
        layout.apply()
        return layout

    def build_user_is_ours(self) -> None:
        """Map the build user (once created) to the test's ids, so chown is not needed."""
        self.accounts.add_group("demo-build", GID)
        self.accounts.add_user(
            "demo-build", UID, GID, str(self.root / "shared/build-cache"), NOLOGIN
        )
        self.accounts.set_members("demo-build", ["demo"])


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "srv/demo")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# 1. The build user ---------------------------------------------------------------------


def test_creates_the_group_and_the_user_as_a_locked_system_user(host: Host) -> None:
    layout = host.layout()
    home = str(host.root / "shared/build-cache")
    assert host.runner.calls == [
        ["groupadd", "-r", "demo-build"],
        ["useradd", "-g", "demo-build", "-G", "demo", "-d", home, "-s", NOLOGIN, *LOCKED_SYSTEM],
    ]
    assert layout.changes[:2] == ["group demo-build created", "user demo-build created"]
    user = host.accounts.user("demo-build")
    assert user.gid == host.accounts.group("demo-build").gid
    assert host.accounts.supplementary("demo-build") == ["demo"]
    # The build cache was given to the new user (its uid and gid are known by then).
    assert (str(host.root / "shared/build-cache"), user.uid, user.gid, True) in host.chown.calls


def test_an_existing_user_gets_only_what_differs(host: Host) -> None:
    a = host.accounts
    home = str(host.root / "shared/build-cache")
    a.add_group("demo-build", 950)
    a.add_group("sudo", 27)
    a.add_user("demo-build", 850, GID, home, "/bin/bash")  # primary group: deploy's
    a.set_members("demo-build", ["sudo", "demo", "demo-build"])
    layout = host.layout()
    assert host.runner.calls == [
        ["usermod", "-g", "demo-build", "-G", "demo", "-s", NOLOGIN, "demo-build"]
    ]
    assert layout.changes[0] == (
        "user demo-build: primary group demo-build; supplementary groups demo-build,sudo -> demo;"
        f" shell /bin/bash -> {NOLOGIN}"
    )
    assert a.user("demo-build").gid == 950
    assert a.supplementary("demo-build") == ["demo"]
    assert a.user("demo-build").home == home  # unchanged: it was right


def test_a_wrong_home_is_corrected_without_touching_the_rest(host: Host) -> None:
    host.build_user_is_ours()
    host.accounts.add_user("demo-build", UID, GID, "/home/demo-build", NOLOGIN)
    host.layout()
    home = str(host.root / "shared/build-cache")
    assert host.runner.calls == [["usermod", "-d", home, "demo-build"]]


def test_a_missing_runtime_group_fails_clearly(host: Host) -> None:
    del host.accounts.group_entries["demo"]
    with pytest.raises(lay.LayoutError, match=r"needs the group\(s\) demo, which do not exist"):
        host.layout()
    assert host.runner.calls == []  # failed before any change


def test_a_failing_command_fails_with_its_message(host: Host) -> None:
    host.runner.fail = "useradd"
    with pytest.raises(lay.LayoutError) as raised:
        host.layout()
    assert "useradd -g demo-build" in str(raised.value)
    assert "(rc 9): useradd: cannot lock /etc/passwd" in str(raised.value)
    # Nothing after the user was attempted; the group was made, the user was not.
    assert not (host.root / "releases").exists()
    assert host.runner.calls[0] == ["groupadd", "-r", "demo-build"]


# 2. The app tree -----------------------------------------------------------------------


def test_creates_the_tree_with_modes_and_is_idempotent(host: Host) -> None:
    host.build_user_is_ours()
    layout = host.layout()
    expected = {
        "": 0o755,
        "releases": 0o2751,
        "venvs": 0o2750,
        "colors": 0o755,
        "static": 0o755,
        "shared": 0o751,
        "shared/overlay": 0o750,
        "shared/media": 0o2750,
        "shared/cache": 0o700,
        "shared/build-cache": 0o700,
    }
    for rel, wanted in expected.items():
        path = host.root / rel if rel else host.root
        assert path.is_dir(), rel
        assert mode(path) == wanted, f"{rel}: {mode(path):o}"
    assert f"created {host.root}/releases (deploy:demo 2751)" in layout.changes
    assert host.chown.calls == []  # every owner is the test's own user here
    again = host.layout()
    assert again.changes == []
    assert again.result() == {
        "changed": False,
        "changes": [],
        "config_changed": False,
        "live": {},
        "commit": "",
        "lock": {},
    }


def test_fixes_the_mode_and_owner_of_existing_directories(host: Host) -> None:
    host.build_user_is_ours()
    host.layout()
    (host.root / "releases").chmod(0o777)
    (host.root / "shared/media").chmod(0o750)  # lost its setgid bit
    host.accounts.add_user("deploy", 4242, GID, "/home/deploy", "/bin/bash")
    host.accounts.add_group("deploy", 4343)
    layout = host.layout()
    assert mode(host.root / "releases") == 0o2751
    assert mode(host.root / "shared/media") == 0o2750
    assert f"chmod 2751 {host.root}/releases (was 0777)" in layout.changes
    assert f"chmod 2750 {host.root}/shared/media (was 0750)" in layout.changes
    chowned = {
        Path(c[0]).relative_to(host.root.parent).as_posix(): c[1:]
        for c in host.chown.calls
        if isinstance(c[0], str)
    }
    assert chowned["demo"] == (4242, 4343, True)  # the root: deploy:deploy
    assert chowned["demo/releases"] == (4242, GID, True)  # deploy:demo
    assert "demo/shared/media" not in chowned  # demo:www-data, as it is
    assert f"chown deploy:demo {host.root}/releases (was {UID}:{GID})" in layout.changes


def test_a_file_where_a_directory_belongs_fails(host: Host) -> None:
    host.build_user_is_ours()
    host.root.mkdir(parents=True)
    (host.root / "colors").write_text("oops")
    with pytest.raises(lay.LayoutError, match=r"colors exists and is not a directory"):
        host.layout()


def test_an_invalid_mode_is_refused(host: Host) -> None:
    with pytest.raises(lay.LayoutError, match=r"invalid mode '0855'"):
        lay.Config.from_params(
            params(
                host.root,
                directories=[
                    {"path": str(host.root), "owner": "deploy", "group": "deploy", "mode": "0855"}
                ],
            )
        )


# 3. The old installer caches -----------------------------------------------------------


def test_removes_the_old_installer_caches(host: Host) -> None:
    host.build_user_is_ours()
    cache = host.root / "shared/cache"
    (cache / "pip/http/a").mkdir(parents=True)
    (cache / "pip/http/a/blob").write_text("x")
    (cache / "uv").symlink_to(host.root / "releases")  # a link: removed, its target is not
    (cache / "poetry").write_text("a file")
    (cache / "repo.git").mkdir()
    layout = host.layout()
    assert sorted(p.name for p in cache.iterdir()) == ["repo.git"]
    assert (host.root / "releases").is_dir()
    removed = [c for c in layout.changes if c.startswith("removed")]
    assert removed == [f"removed {cache}/pip", f"removed {cache}/uv", f"removed {cache}/poetry"]
    assert not [c for c in host.layout().changes if c.startswith("removed")]


# 4. Link names of older releases -------------------------------------------------------


def test_gives_older_releases_the_current_link_names(host: Host) -> None:
    host.build_user_is_ours()
    host.layout()  # releases/ is setgid before the releases are made
    releases = host.root / "releases"
    old = releases / "20250101T000000Z-aaaaaaaa"
    new = releases / "20260101T000000Z-bbbbbbbb"
    app_static = releases / "20260102T000000Z-cccccccc"
    taken = releases / "20260103T000000Z-dddddddd"
    hidden = releases / ".20260104T000000Z-eeeeeeee.tmp"
    for r in (old, new, app_static, taken, hidden):
        r.mkdir()
    (old / ".venv").symlink_to("../../venvs/k1")
    (old / "static").symlink_to("../../static/20250101T000000Z-aaaaaaaa")
    (new / ".djdeploy-venv").symlink_to("../../venvs/k2")
    (app_static / "static").mkdir()  # the app's own static/: not a link of ours
    (taken / ".venv").symlink_to("../../venvs/k3")
    (taken / ".djdeploy-venv").symlink_to("../../venvs/missing")  # dangling, but taken
    (hidden / ".venv").symlink_to("../../venvs/k4")
    layout = host.layout()
    linked = [c for c in layout.changes if c.startswith("linked")]
    assert linked == [f"linked {old}/.djdeploy-venv", f"linked {old}/.djdeploy-static"]
    assert str((old / ".djdeploy-venv").readlink()) == "../../venvs/k1"
    assert str((old / ".djdeploy-static").readlink()) == "../../static/20250101T000000Z-aaaaaaaa"
    assert str((taken / ".djdeploy-venv").readlink()) == "../../venvs/missing"
    assert not (app_static / ".djdeploy-static").is_symlink()
    assert not (hidden / ".djdeploy-venv").is_symlink()
    # The links are the deploy user's; releases/ is setgid, so the group stays the directory's.
    assert (str(old / ".djdeploy-venv"), UID, -1, False) in host.chown.calls
    assert not [c for c in host.layout().changes if c.startswith("linked")]


def test_link_group_is_the_owners_when_the_release_is_not_setgid(host: Host) -> None:
    host.build_user_is_ours()
    release = host.root / "releases/20250101T000000Z-aaaaaaaa"
    release.mkdir(parents=True)
    release.chmod(0o755)
    (release / ".venv").symlink_to("../../venvs/k1")
    host.layout()
    assert (str(release / ".djdeploy-venv"), UID, GID, False) in host.chown.calls


# 5. Files ------------------------------------------------------------------------------


def test_writes_files_atomically_and_only_when_they_differ(host: Host) -> None:
    host.build_user_is_ours()
    layout = host.layout()
    env = host.root / "shared/.env"
    manage = host.root.parent / "bin/demo-manage"
    assert env.read_text() == ENV and mode(env) == 0o640
    assert manage.read_text().startswith("#!/bin/sh") and mode(manage) == 0o755
    assert f"wrote {env} (new)" in layout.changes
    assert layout.config_changed is True
    # The overlay is not enabled: not written.
    assert not (host.root / "shared/overlay/djdeploy_overlay.py").exists()
    # No temporary file is left beside them.
    assert sorted(p.name for p in env.parent.iterdir() if p.is_file()) == [".env"]
    assert sorted(p.name for p in manage.parent.iterdir()) == ["demo-manage"]
    again = host.layout()
    assert again.changes == [] and again.config_changed is False

    # A new content replaces the file by a rename: an open reader keeps the old content.
    reader = env.open()
    inode = env.stat().st_ino
    changed = params(host.root)["files"]
    changed[0]["content"] = ENV + "EXTRA='1'\n"
    layout = host.layout(files=changed)
    assert layout.changes == [f"wrote {env} (content)"]
    assert layout.config_changed is True
    assert env.stat().st_ino != inode
    assert reader.read() == ENV
    reader.close()
    assert env.read_text().endswith("EXTRA='1'\n")


def test_a_wrong_mode_or_owner_rewrites_the_file(host: Host) -> None:
    host.build_user_is_ours()
    host.layout()
    env = host.root / "shared/.env"
    env.chmod(0o644)
    layout = host.layout()
    assert layout.changes == [f"wrote {env} (mode 0644 -> 0640)"]
    assert mode(env) == 0o640 and env.read_text() == ENV
    host.accounts.add_group("demo", 4343)
    host.accounts.add_group("root", 4343)  # keeps the wrapper's owner wrong too
    host.chown.calls.clear()
    layout = host.layout()
    assert f"wrote {env} (owner {UID}:{GID} -> deploy:demo)" in layout.changes
    # The temporary file was given its owner through its descriptor, before the rename.
    fd_calls = [c for c in host.chown.calls if isinstance(c[0], int)]
    assert (UID, 4343, True) in [c[1:] for c in fd_calls]


def test_only_the_env_file_and_the_overlay_are_configuration(host: Host) -> None:
    host.build_user_is_ours()
    host.layout()
    files = params(host.root)["files"]
    files[2]["content"] = "#!/bin/sh\nexec false\n"
    layout = host.layout(files=files)
    assert layout.changes == [f"wrote {files[2]['path']} (content)"]
    assert layout.config_changed is False
    files[1]["enabled"] = True
    layout = host.layout(files=files)
    assert layout.changes == [f"wrote {files[1]['path']} (new)"]
    assert layout.config_changed is True


def test_a_file_in_a_missing_directory_fails_without_its_content(host: Host) -> None:
    host.build_user_is_ours()
    files = params(host.root)["files"]
    files[0]["path"] = str(host.root / "nowhere/.env")
    with pytest.raises(lay.LayoutError) as raised:
        host.layout(files=files)
    assert "cannot write" in str(raised.value) and "nowhere" in str(raised.value)
    assert SECRET not in str(raised.value)


# Check mode ----------------------------------------------------------------------------


def test_check_mode_reports_everything_and_changes_nothing(host: Host) -> None:
    layout = host.layout(check_mode=True)
    assert host.runner.calls == []
    assert host.chown.calls == []
    assert not host.root.exists()
    assert not (host.root.parent / "bin/demo-manage").exists()
    assert layout.changes[:2] == ["group demo-build created", "user demo-build created"]
    assert f"created {host.root}/shared/build-cache (demo-build:demo-build 0700)" in layout.changes
    assert f"wrote {host.root}/shared/.env (new)" in layout.changes
    assert layout.config_changed is True


def test_check_mode_on_a_laid_out_host_reports_what_differs(host: Host) -> None:
    host.build_user_is_ours()
    host.layout()
    (host.root / "venvs").chmod(0o755)
    (host.root / "shared/cache/pip").mkdir()
    layout = host.layout(check_mode=True)
    assert layout.changes == [
        f"chmod 2750 {host.root}/venvs (was 0755)",
        f"removed {host.root}/shared/cache/pip",
    ]
    assert mode(host.root / "venvs") == 0o755
    assert (host.root / "shared/cache/pip").is_dir()


def test_the_result_never_holds_a_content(host: Host) -> None:
    host.build_user_is_ours()
    for check_mode in (True, False, False):
        text = json.dumps(host.layout(check_mode=check_mode).result())
        assert SECRET not in text and "hunter2" not in text


# The module as Ansible runs it ---------------------------------------------------------


def _module(tmp_path: Path, args: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    return run_module("roles/release/library/djdeploy_layout.py", args, tmp_path)


def _real_args(root: Path) -> dict[str, Any]:
    """Arguments that need no account change on this machine: the 'build user' is whoever
    runs the test, as it is; every owner is the test's uid and gid."""
    me = pwd.getpwuid(UID)
    supplementary = [
        g.gr_name for g in grp.getgrall() if me.pw_name in g.gr_mem and g.gr_gid != me.pw_gid
    ]
    own = {"owner": str(UID), "group": str(GID)}
    return {
        "build_user": me.pw_name,
        "build_home": me.pw_dir,
        "build_groups": supplementary,
        "build_shell": me.pw_shell,
        "directories": [{"path": str(root), **own, "mode": "0750"}],
        "files": [
            {"path": str(root / ".env"), "content": ENV, **own, "mode": "0640", "config": True}
        ],
    }


def _own_group_is_primary() -> bool:
    me = pwd.getpwuid(UID)
    return grp.getgrgid(me.pw_gid).gr_name == me.pw_name


@pytest.mark.skipif(not _own_group_is_primary(), reason="the user's primary group has another name")
def test_the_module_masks_the_content_and_fails_with_a_useful_message(tmp_path: Path) -> None:
    root = tmp_path / "app"
    args = _real_args(root)
    rc, result, output = _module(tmp_path, {**args, "_ansible_check_mode": True})
    assert rc == 0, output
    assert result["changed"] is True and result["config_changed"] is True
    assert not root.exists()
    # The real run below must not touch this machine's accounts.
    accounts = [c for c in result["changes"] if c.startswith(("user ", "group "))]
    if accounts:
        pytest.skip(f"this user does not look like its own build user: {accounts}")
    rc, result, output = _module(tmp_path, args)
    assert rc == 0, output
    assert (root / ".env").read_text() == ENV
    assert SECRET not in output
    assert result["invocation"]["module_args"]["files"][0]["content"] != ENV
    rc, result, output = _module(tmp_path, args)
    assert rc == 0 and result["changed"] is False, output
    # A failure names the file and the cause, never the content.
    args["files"][0]["path"] = str(root / ".env/inside")
    (root / ".env").unlink()
    (root / ".env").write_text("a file, not a directory")
    rc, result, output = _module(tmp_path, args)
    assert rc != 0
    assert f"cannot write {root}/.env/inside" in result["msg"]
    assert SECRET not in output


def test_the_live_record_is_read_first_and_returned(host: Host) -> None:
    host.build_user_is_ours()
    release = host.root / "releases" / "r1"
    release.mkdir(parents=True)
    (release / ".djdeploy-release.json").write_text('{"id": "r1", "commit": "abc"}')
    (host.root / "current").symlink_to(release)
    layout = host.layout(live_record=".djdeploy-release.json")
    assert layout.result()["live"] == {"id": "r1", "commit": "abc"}
    # No live release yet (first deploy): empty.
    (host.root / "current").unlink()
    again = host.layout(live_record=".djdeploy-release.json")
    assert again.result()["live"] == {}


def test_a_broken_live_record_fails_before_anything_changes(host: Host) -> None:
    host.build_user_is_ours()
    release = host.root / "releases" / "r1"
    release.mkdir(parents=True)
    (release / ".djdeploy-release.json").write_text("{not json")
    (host.root / "current").symlink_to(release)
    with pytest.raises(lay.LayoutError, match=r"cannot read .*djdeploy-release\.json"):
        host.layout(live_record=".djdeploy-release.json")
    assert not (host.root / "venvs").exists()
    assert host.runner.calls == []


# The release's first call: resolve the ref, then the lock, before any change -------------


def _lock(lock_dir: Path, token: str = "t1") -> dict[str, Any]:
    return {
        "app": "demo",
        "token": token,
        "who": "alice",
        "action": "release",
        "run": "main",
        "host": "web1",
        "break_lock": False,
        "lock_dir": str(lock_dir),
    }


RESOLVE = {"repo": "/srv/git/demo.git", "ref": "main", "user": "deploy"}


def test_the_ref_is_resolved_as_the_deploy_user_and_returned(host: Host) -> None:
    host.build_user_is_ours()
    layout = host.layout(resolve=RESOLVE)
    assert layout.result()["commit"] == COMMIT_MAIN
    assert host.git_calls == [
        ("deploy", ["git", "ls-remote", "--", "/srv/git/demo.git", "main", "main^{}"])
    ]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((128, "", "fatal: not a repo"), "cannot read the git repository '/srv/git/demo.git'"),
        ((0, "", ""), "the ref 'main' does not exist"),
    ],
)
def test_a_bad_ref_or_repository_fails_before_the_lock_and_any_change(
    host: Host, tmp_path: Path, answer: tuple[int, str, str], message: str
) -> None:
    host.build_user_is_ours()
    host.git_answer = answer
    locks = tmp_path / "locks"
    with pytest.raises(lay.LayoutError, match=message):
        host.layout(resolve=RESOLVE, lock=_lock(locks))
    assert not (locks / "demo.lock").exists()
    assert not host.root.exists()
    assert host.runner.calls == []


def test_the_lock_is_taken_before_any_change_and_stays_held(host: Host, tmp_path: Path) -> None:
    host.build_user_is_ours()
    locks = tmp_path / "locks"
    layout = host.layout(resolve=RESOLVE, lock=_lock(locks))
    result = layout.result()
    assert result["lock"]["acquired"] is True and result["lock"]["holder"]["token"] == "t1"
    assert json.loads((locks / "demo.lock").read_text())["run"] == "main"
    # The same run may call again (a second build play, a retry): it holds the lock already.
    assert host.layout(lock=_lock(locks)).result()["lock"]["acquired"] is True


def test_another_runs_lock_refuses_before_any_change(host: Host, tmp_path: Path) -> None:
    host.build_user_is_ours()
    locks = tmp_path / "locks"
    host.layout(lock=_lock(locks, token="other"))
    shutil.rmtree(host.root)
    with pytest.raises(lay.LayoutError, match=r"demo on web1 is locked by alice since"):
        host.layout(lock=_lock(locks, token="mine"))
    assert not host.root.exists()
    # Breaking it (a run that died) takes it, with a warning naming whose lock it was.
    broken = host.layout(lock={**_lock(locks, token="mine"), "break_lock": True})
    assert broken.result()["lock"]["holder"]["token"] == "mine"
    assert any("after breaking the lock of alice" in w for w in broken.warnings)


def test_calendar_expressions_are_checked_by_systemd_before_any_change(host: Host) -> None:
    with pytest.raises(lay.LayoutError) as raised:
        host.layout(calendars=["*:0/5", "every tuesday"], calendars_knob="app_schedules")
    msg = str(raised.value)
    assert msg.startswith(
        "release: app_schedules: systemd does not accept the on_calendar expression(s)"
        " 'every tuesday' (Failed to parse calendar specification"
    )
    assert "nothing was changed" in msg
    assert host.runner.calls == [
        ["systemd-analyze", "calendar", "--iterations=1", "*:0/5"],
        ["systemd-analyze", "calendar", "--iterations=1", "every tuesday"],
    ]
    assert not host.root.exists()


def test_accepted_calendar_expressions_let_the_layout_go_on(host: Host) -> None:
    host.build_user_is_ours()
    host.layout(calendars=["daily"])
    assert ["systemd-analyze", "calendar", "--iterations=1", "daily"] in host.runner.calls
    assert (host.root / "releases").is_dir()
