"""Redis on the stack host (app_redis with web and db on one host): loopback only, with the
password, and the app reaches it with the REDIS_URL of its environment.

On Debian 13 only (inventory/host_vars/stack-debian13/redis.yml): Debian 12's Redis is the
cluster scenario's (tests/test_redis.py there), on a db host the app hosts reach over the
network.
"""

from __future__ import annotations

import os
import shlex
import socket

import pytest
from testlib import app_pings_redis, redis_talk

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_DISTRO", "debian12") != "debian13",
    reason="Redis on the stack host is Debian 13's; Debian 12's is tested in the cluster scenario",
)

APP = "demo"
PASSWORD = "molecule-redis-password-1"
PORT = 6379


def test_redis_needs_the_password(host):
    assert redis_talk(host, "127.0.0.1", PORT, "PING") == ["-NOAUTH Authentication required."]
    wrong = redis_talk(host, "127.0.0.1", PORT, "AUTH wrong-password-123", "PING")
    assert wrong[0].startswith("-WRONGPASS"), wrong
    assert redis_talk(host, "127.0.0.1", PORT, f"AUTH {PASSWORD}", "PING") == ["+OK", "+PONG"]


def test_redis_listens_on_loopback_only_and_keeps_its_data(host):
    listening = host.run(f"ss -Hltn 'sport = :{PORT}'")
    assert listening.rc == 0, listening.stderr
    local = {line.split()[3].rsplit(":", 1)[0] for line in listening.stdout.splitlines()}
    assert local and local <= {"127.0.0.1", "[::1]"}, local
    # The host's own network address gets no Redis, and neither does the controller.
    address = host.run("hostname -I").stdout.split()[0]
    assert redis_talk(host, address, PORT, "PING") == ["refused"]
    try:
        with socket.create_connection((address, PORT), timeout=3):
            reached = "open"
    except ConnectionRefusedError:
        reached = "refused"
    except TimeoutError:
        reached = "timeout"
    assert reached in ("refused", "timeout")
    cli = f"redis-cli --no-auth-warning -a {shlex.quote(PASSWORD)}"
    mode = host.run(f"{cli} CONFIG GET protected-mode")
    assert mode.stdout.split() == ["protected-mode", "yes"], mode.stdout + mode.stderr
    policy = host.run(f"{cli} CONFIG GET maxmemory-policy")
    assert policy.stdout.split() == ["maxmemory-policy", "noeviction"], policy.stdout


def test_the_app_reaches_redis_with_its_redis_url(host):
    env = host.file(f"/srv/{APP}/shared/.env").content_string
    assert f"REDIS_URL='redis://:{PASSWORD}@127.0.0.1:{PORT}/0'" in env
    assert app_pings_redis(host, APP) == "+OK +PONG"
