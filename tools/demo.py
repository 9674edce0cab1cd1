"""Local demo: the demo Django app on a systemd container, deployed over real SSH.

  python -m tools.demo up     start the container, run site.yml over SSH, print the URL
  python -m tools.demo down   remove the container and the demo state

The container (djdeploy-systemd image) publishes SSH on 127.0.0.1:2222 and HTTPS on
127.0.0.1:8443. Like a cloud image's first boot, it gets a `deploy` user with the demo SSH
key and sudo; everything else is done by `ansible-playbook site.yml -i inventories/local`
connecting as that user.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tools import images

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "demo"
NAME = "djdeploy-demo"
DISTRO = os.environ.get("DEMO_DISTRO", "debian12")
PORTS = {"22": 2222, "443": 8443, "80": 8080}
URL = f"https://localhost:{PORTS['443']}/"
APP_SOURCE = ROOT / "tests" / "fixtures" / "apps" / "demo"


def sh(*cmd: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=capture)


def docker_exec(*cmd: str, name: str = NAME) -> None:
    sh("docker", "exec", name, *cmd)


def container_running(name: str = NAME) -> bool:
    out = sh("docker", "inspect", "-f", "{{.State.Running}}", name, check=False, capture=True)
    return out.returncode == 0 and out.stdout.strip() == "true"


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(1)
    sys.exit(f"demo: {what} did not come up within {timeout:.0f}s")


def systemd_up(name: str = NAME) -> bool:
    out = sh("docker", "exec", name, "systemctl", "is-system-running", check=False, capture=True)
    return out.stdout.strip() in {"running", "degraded"}


def ssh_port_open(host: str = "127.0.0.1", port: int = PORTS["22"]) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            return conn.recv(4).startswith(b"SSH")
    except OSError:
        return False


def start_container(
    name: str = NAME, distro: str = DISTRO, docker_args: Sequence[str] | None = None
) -> None:
    """A systemd container from the test image; ``docker_args`` default: the demo's ports."""
    image = images.build(distro)
    if docker_args is None:
        docker_args = [
            arg
            for inside, outside in PORTS.items()
            for arg in ("-p", f"127.0.0.1:{outside}:{inside}")
        ]
    sh(
        "docker", "run", "-d", "--name", name, "--hostname", name,
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--stop-signal", "SIGRTMIN+3", *docker_args, image,
    )  # fmt: skip
    wait_for("systemd in the container", lambda: systemd_up(name))


def bootstrap_access(
    name: str = NAME, state: Path = STATE, ssh: tuple[str, int] = ("127.0.0.1", PORTS["22"])
) -> None:
    """What a cloud image's first boot does: a sudo user with our SSH key."""
    key = state / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
    pub = (state / "id_ed25519.pub").read_text().strip()
    # Only on first boot: afterwards the base role owns the user and its sudoers file.
    script = (
        "id deploy >/dev/null 2>&1 && exit 0; "
        "useradd -m -s /bin/bash deploy; "
        "install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh; "
        f"echo '{pub}' > /home/deploy/.ssh/authorized_keys; "
        "chown deploy:deploy /home/deploy/.ssh/authorized_keys; "
        "chmod 0600 /home/deploy/.ssh/authorized_keys; "
        "echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy; "
        "chmod 0440 /etc/sudoers.d/deploy"
    )
    docker_exec("sh", "-c", script, name=name)
    wait_for(f"SSH on {ssh[0]}:{ssh[1]}", lambda: ssh_port_open(*ssh))


def seed_repository(name: str = NAME) -> None:
    """A git repository of the demo app inside the container, like a git server would be."""
    with tempfile.TemporaryDirectory(prefix="djdeploy-demo-repo-") as tmp:
        work = Path(tmp) / "demo"
        shutil.copytree(
            APP_SOURCE, work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "db.sqlite3")
        )
        env = dict(
            os.environ,
            GIT_AUTHOR_NAME="demo",
            GIT_AUTHOR_EMAIL="demo@example.invalid",
            GIT_COMMITTER_NAME="demo",
            GIT_COMMITTER_EMAIL="demo@example.invalid",
        )
        for cmd in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "add", "-A"],
            ["git", "commit", "-q", "-m", "demo app"],
        ):
            subprocess.run(cmd, cwd=work, env=env, check=True)
        bare = Path(tmp) / "demo.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        docker_exec("sh", "-c", "rm -rf /srv/git/demo.git && mkdir -p /srv/git", name=name)
        sh("docker", "cp", str(bare), f"{name}:/srv/git/demo.git")
        docker_exec("chown", "-R", "deploy:deploy", "/srv/git", name=name)


def secrets_file(state: Path = STATE) -> Path:
    path = state / "secrets.yml"
    if not path.exists():
        path.write_text(
            "---\n# Generated by `make demo` for the local demo only.\n"
            f"app_secret_key: '{secrets.token_urlsafe(50)}'\n"
            f"app_db_password: '{secrets.token_urlsafe(24)}'\n"
        )
        path.chmod(0o600)
    return path


def check_url() -> None:
    cert = STATE / "demo.crt"
    sh("docker", "cp", f"{NAME}:/etc/ssl/djdeploy/demo/fullchain.pem", str(cert))
    out = sh(
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(cert),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        URL,
        capture=True,
        check=False,
    )
    if out.stdout != "200":
        sys.exit(f"demo: {URL} answered {out.stdout or out.stderr.strip()}, expected 200")


def show_processes(name: str = NAME) -> None:
    """Print the app's units besides web: its processes and its schedules' timers."""
    for what, argv in (
        ("processes", ["systemctl", "list-units", "--no-legend", "--plain", "demo-*@*.service"]),
        ("schedules", ["systemctl", "list-timers", "--no-legend", "demo-*.timer"]),
    ):
        out = sh("docker", "exec", name, *argv, check=False, capture=True).stdout
        print(f"demo: {what}:\n" + (out.strip() or "(none)"))


def up() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    fresh = not container_running()
    if fresh:
        sh("docker", "rm", "-f", NAME, check=False, capture=True)
        start_container()
    bootstrap_access()
    if fresh:
        seed_repository()
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    cmd = ["ansible-playbook", "site.yml", "-i", "inventories/local", "-e", f"@{secrets_file()}"]
    print("demo: " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0:
        return 1
    check_url()
    show_processes()
    print(f"\ndemo: the demo app answers at {URL} (self-signed certificate: {STATE / 'demo.crt'})")
    print("demo: `make demo-down` removes it")
    return 0


def down() -> int:
    sh("docker", "rm", "-f", NAME, check=False, capture=True)
    shutil.rmtree(STATE, ignore_errors=True)
    print("demo: removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local demo of the whole stack")
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
