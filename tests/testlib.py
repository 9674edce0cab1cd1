"""Helpers shared by the Molecule testinfra suites (imported from each scenario's conftest)."""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parent.parent


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def https_get(
    host: Any,
    name: str,
    path: str = "/",
    *,
    scheme: str = "https",
    port: int | None = None,
    cacert: str | None = None,
    extra: str = "",
) -> Response:
    """Request name+path through nginx on the host as a browser would (SNI, verified TLS).

    curl runs inside the host, so the request goes to its own loopback; --resolve sends the
    real host name (SNI and Host header) to 127.0.0.1.
    """
    port = port or (443 if scheme == "https" else 80)
    tls = f"--cacert {cacert}" if cacert else ""
    cmd = (
        f"curl -sS --max-time 20 -D - {tls} {extra} --resolve {name}:{port}:127.0.0.1 "
        f"'{scheme}://{name}:{port}{path}'"
    )
    result = host.run(cmd)
    assert result.rc == 0, f"{cmd}: {result.stderr}"
    raw_headers, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = raw_headers.splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Response(status, headers, body)


def hashed_static_urls(html: str) -> list[str]:
    """Static URLs with a ManifestStaticFilesStorage hash (12 hex characters)."""
    return re.findall(r"/static/[\w/.-]+\.[0-9a-f]{12}\.\w+", html)


@dataclass
class PlaybookRun:
    rc: int
    output: str

    @property
    def flat(self) -> str:
        """The output with every run of whitespace as one space (messages wrap in YAML output)."""
        return " ".join(self.output.split())

    @property
    def changed(self) -> int:
        counts = re.findall(r"changed=(\d+)", self.output)
        return sum(int(c) for c in counts)


def run_playbook(
    playbook: str, *args: str, inventory: str | None = None, timeout: int = 1200
) -> PlaybookRun:
    """Run a project playbook against the scenario's hosts, as a user (or CI) would."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [
        "ansible-playbook",
        "-i",
        inventory or env["MOLECULE_INVENTORY_FILE"],
        str(PROJECT / playbook),
        *args,
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def inventory_without(tmp_path: Path, *names: str) -> str:
    """A copy of the Molecule inventory (file and group_vars) with some variables removed."""
    source = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    target = tmp_path / "inventory"
    shutil.copytree(source.parent, target, symlinks=False)
    for path in target.rglob("*.yml"):
        data = yaml.safe_load(path.read_text())
        _strip(data, names)
        path.write_text(yaml.safe_dump(data))
    return str(target / source.name)


def inventory_with(tmp_path: Path, **values: Any) -> str:
    """A copy of the Molecule inventory whose group_vars/all also sets these values (as an
    operator would in the inventory; unlike -e, they have inventory precedence)."""
    source = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    target = tmp_path / "inventory-with"
    shutil.copytree(source.parent, target, symlinks=False)
    extra = target / "group_vars" / "all" / "zz-test.yml"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text(yaml.safe_dump(values))
    return str(target / source.name)


def inventory_with_host_vars(tmp_path: Path, host: str, **values: Any) -> str:
    """A copy of the Molecule inventory where one host also has these variables (its
    host_vars file beside the inventory, which outranks the inventory file's host variables)."""
    source = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    target = tmp_path / "inventory-host-vars"
    shutil.copytree(source.parent, target, symlinks=False)
    extra = target / "host_vars" / f"{host}.yml"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text(yaml.safe_dump(values))
    return str(target / source.name)


def _strip(node: Any, names: tuple[str, ...]) -> None:
    if isinstance(node, dict):
        for name in names:
            node.pop(name, None)
        for value in node.values():
            _strip(value, names)


def commit_and_push(host: Any, change: str, message: str, app: str = "demo") -> str:
    """Run a shell change in the app's source (/srv/git/src/<app> on host), commit it and push
    it to /srv/git/<app>.git, the repository the scenario releases from; return the sha."""
    result = host.run(
        f"cd /srv/git/src/{app} && {change} && git add -A && git commit -qm '{message}' "
        f"&& git push -q /srv/git/{app}.git HEAD:main && git rev-parse HEAD"
    )
    assert result.rc == 0, result.stderr
    return str(result.stdout.strip())


def write_file(path: str, text: str) -> str:
    """A shell command that writes text to path (base64: no quoting of the text)."""
    encoded = base64.b64encode(text.encode()).decode()
    return f"echo {encoded} | base64 -d > {path}"


def live_release(host: Any, app: str = "demo") -> str:
    """The release directory the app's `current` link points at."""
    linked: str = host.file(f"/srv/{app}/current").linked_to
    return linked


def live_invocation(host: Any, app: str = "demo") -> str:
    """The systemd invocation of the app's live gunicorn (a new one on every (re)start)."""
    color = host.file(f"/srv/{app}/live-color").content_string.strip()
    out: str = host.run(f"systemctl show -P InvocationID {app}@{color}.service").stdout
    return out.strip()


def assert_serving(
    host: Any, release: str, app: str = "demo", name: str = "demo.test", static: bool = False
) -> None:
    """The release is live and its page comes through nginx over HTTPS; with static, every
    hashed static file the page links comes from nginx too."""
    cacert = f"/etc/ssl/djdeploy/{app}/fullchain.pem"
    assert live_release(host, app) == release
    page = https_get(host, name, "/", cacert=cacert)
    assert page.status == 200
    assert release.rsplit("/", 1)[-1] in page.body
    if static:
        urls = hashed_static_urls(page.body)
        assert any(url.startswith("/static/site/brand.") for url in urls), urls
        for url in urls:
            assert https_get(host, name, url, cacert=cacert).status == 200, url


# Migrations of the fixture app's greetings app that the migration safety tests release (stack
# and cluster): a nullable field the live code ignores, then its removal, which the live code
# still reads. {latest} is the migration each depends on.
GREETINGS_MIGRATIONS = "greetings/migrations"

ADD_NOTE = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("greetings", "{latest}")]
    operations = [
        migrations.AddField("greeting", "note", models.CharField(max_length=100, null=True)),
    ]
"""

REMOVE_NOTE = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("greetings", "{latest}")]
    operations = [migrations.RemoveField("greeting", "note")]
"""


def new_migration(
    source_host: Any, suffix: str, template: str, app: str = "demo"
) -> tuple[str, str]:
    """(migration name, shell command writing it into the app's source) for a greetings
    migration after the newest one in /srv/git/src/<app> on source_host."""
    listing = source_host.run(f"ls -1 /srv/git/src/{app}/{GREETINGS_MIGRATIONS}")
    assert listing.rc == 0, listing.stderr
    names = sorted(n[:-3] for n in listing.stdout.split() if n[:4].isdigit() and n.endswith(".py"))
    latest = names[-1]
    name = f"{int(latest[:4]) + 1:04d}_{suffix}"
    text = template.replace("{latest}", latest)
    return name, write_file(f"{GREETINGS_MIGRATIONS}/{name}.py", text)


def djdeploy(*args: str, inventory: str | None = None, timeout: int = 900) -> Any:
    """Run the djdeploy CLI as an operator would (the scenario's inventory by default)."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    cmd = [sys.executable, "-m", "djdeploy", "--inventory"]
    cmd += [inventory or os.environ["MOLECULE_INVENTORY_FILE"], *args]
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
    )


def copied_inventory(target: Path) -> str:
    """A copy of the scenario's inventory (no links back into the repository): verbs that
    write the inventory (config:set, scale) change the copy only."""
    source = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    shutil.copytree(source.parent, target, symlinks=False)
    return str(target / source.name)


def https_from_controller(
    address: str, name: str, path: str, cafile: str, timeout: float = 10.0
) -> tuple[int, dict[str, str], str]:
    """GET https://<name><path> from the controller, over the network to address:443 (not a
    host's loopback): status, headers (lower case) and body. TLS verified against cafile."""
    context = ssl.create_default_context(cafile=cafile)
    request = f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    raw = socket.create_connection((address, 443), timeout=timeout)
    with context.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


# Sends Redis commands (RESP inline form) from a host with its python3 (no client package on
# the hosts) and prints the server's first reply line of each; "timeout" or "refused" when
# nothing accepts the connection.
REDIS_CLIENT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "except socket.timeout:\n"
    "    print('timeout'); sys.exit(0)\n"
    "except ConnectionRefusedError:\n"
    "    print('refused'); sys.exit(0)\n"
    "f = s.makefile('rb')\n"
    "for command in sys.argv[3:]:\n"
    "    s.sendall(command.encode() + b'\\r\\n')\n"
    "    print(f.readline().decode().strip())\n"
)


def redis_talk(host: Any, address: str, port: int, *commands: str) -> list[str]:
    """Redis's first reply line to each command, sent from host to address:port."""
    args = " ".join(shlex.quote(c) for c in (address, str(port), *commands))
    result = host.run(f"python3 -c {shlex.quote(REDIS_CLIENT)} {args}")
    assert result.rc == 0, result.stderr
    return [str(line) for line in result.stdout.strip().splitlines()]


def app_pings_redis(host: Any, app: str) -> str:
    """AUTH and PING with the REDIS_URL of the app's environment, as its runtime user (the
    manage wrapper reads the env file): the two reply lines, e.g. "+OK +PONG"."""
    code = (
        "import os, socket\n"
        "from urllib.parse import urlsplit\n"
        "u = urlsplit(os.environ['REDIS_URL'])\n"
        "s = socket.create_connection((u.hostname, u.port), timeout=5)\n"
        "s.sendall(f'AUTH {u.password}\\r\\nPING\\r\\n'.encode())\n"
        "f = s.makefile('rb')\n"
        "print(f.readline().decode().strip(), f.readline().decode().strip())\n"
    )
    result = host.run(f"runuser -u {app} -- {app}-manage shell -c {shlex.quote(code)}")
    assert result.rc == 0, result.stderr
    return str(result.stdout.strip().splitlines()[-1])
