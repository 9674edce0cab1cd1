"""Make sure a Docker engine answers, starting one on Debian/Ubuntu hosts where we are root.

An engine that already answers is never touched. On a Debian or Ubuntu host where we are
root and no engine answers, install ``docker.io`` (when ``dockerd`` is missing) and start
``dockerd`` in the background with its log in ``.cache/dockerd.log``. Anywhere else, say
what to install and fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / ".cache" / "dockerd.log"
PIDFILE = Path("/var/run/docker.pid")
WAIT_SECONDS = 90


def engine_answers() -> bool:
    """True when ``docker info`` reaches a running engine."""
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def os_release() -> dict[str, str]:
    """Parse /etc/os-release into a dict (empty when the file is missing)."""
    path = Path("/etc/os-release")
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip().strip('"')
    return values


def is_debian_like(release: dict[str, str]) -> bool:
    """True for Debian, Ubuntu and their derivatives."""
    ids = {release.get("ID", "")} | set(release.get("ID_LIKE", "").split())
    return bool(ids & {"debian", "ubuntu"})


def fail(message: str) -> int:
    print(f"engine: {message}", file=sys.stderr)
    return 1


def install_docker() -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("engine: installing docker.io with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "docker.io"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def clear_stale_pidfile(pidfile: Path, proc: Path = Path("/proc")) -> bool:
    """Remove dockerd's pid file when no process of that pid runs; True when removed.

    dockerd refuses to start while its pid file exists. Where ``/var/run`` is not a tmpfs, a
    machine that stopped without stopping dockerd keeps the file, and the next start fails
    with "pid file found". A pid file naming a live process is left alone.
    """
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return False
    if text.isdigit() and (proc / text).exists():
        return False
    pidfile.unlink()
    print(f"engine: removed {pidfile}: no process {text or '(empty)'} runs", flush=True)
    return True


def start_dockerd() -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    print(f"engine: starting dockerd in the background (log: {LOG})", flush=True)
    with LOG.open("ab") as log:
        subprocess.Popen(
            ["dockerd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def main() -> int:
    if engine_answers():
        print("engine: a Docker engine already answers; leaving it alone")
        return 0
    release = os_release()
    if sys.platform != "linux" or not is_debian_like(release) or os.geteuid() != 0:
        return fail(
            "no Docker engine answers. Install and start Docker (Docker Engine, Docker "
            "Desktop, or Podman with its Docker-compatible socket) and re-run; on a "
            "Debian or Ubuntu host as root this step installs docker.io and starts "
            "dockerd itself."
        )
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        install_docker()
    clear_stale_pidfile(PIDFILE)
    start_dockerd()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if engine_answers():
            print("engine: dockerd is up")
            return 0
        time.sleep(1)
    return fail(f"dockerd did not answer within {WAIT_SECONDS}s; see {LOG}")


if __name__ == "__main__":
    sys.exit(main())
