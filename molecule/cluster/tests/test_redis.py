"""Redis on the db host (app_redis): the app hosts reach it with the password, nobody else.

Clients speak Redis's protocol over a plain socket with the host's python3 (testlib's
redis_talk): the connection starts on the scenario's own containers, the real sources
the firewall and Redis judge. A dropped port gets no answer at all (timeout).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from clusterlib import APP, DB, LB, WEB1, WEB2, address, other
from testlib import app_pings_redis, inventory_with, redis_talk, run_playbook

testinfra_hosts = [DB]

ENV_FILE = f"/srv/{APP}/shared/.env"
PASSWORD = "molecule-redis-password-1"
PORT = 6379


def talk(source: str, target: str, *commands: str) -> list[str]:
    return redis_talk(other(source), address(target), PORT, *commands)


def test_app_hosts_need_the_password():
    assert talk(WEB1, DB, "PING") == ["-NOAUTH Authentication required."]
    assert talk(WEB1, DB, "AUTH wrong-password-123", "PING")[0].startswith("-WRONGPASS")
    assert talk(WEB1, DB, f"AUTH {PASSWORD}", "PING") == ["+OK", "+PONG"]
    assert talk(WEB2, DB, f"AUTH {PASSWORD}", "PING") == ["+OK", "+PONG"]


def test_other_hosts_are_dropped_by_the_firewall():
    assert talk(LB, DB, "PING") == ["timeout"]


def test_the_app_gets_redis_url_and_reaches_redis_with_it():
    web = other(WEB1)
    env = web.file(ENV_FILE).content_string
    url = f"redis://:{PASSWORD}@{address(DB)}:{PORT}/0"
    assert f"REDIS_URL='{url}'" in env
    # As the app's runtime user, with the environment the app gets: the URL's password and
    # host answer PONG.
    assert app_pings_redis(web, APP) == "+OK +PONG"


def test_redis_listens_on_loopback_and_the_private_address_only(host):
    listening = host.run(f"ss -Hltn 'sport = :{PORT}'")
    assert listening.rc == 0, listening.stderr
    local = {line.split()[3].rsplit(":", 1)[0] for line in listening.stdout.splitlines()}
    assert local <= {"127.0.0.1", "[::1]", address(DB)}, local
    assert {"127.0.0.1", address(DB)} <= local, local
    # The settings the server runs with (redis-cli as root, authenticated from the drop-in).
    cli = f"redis-cli --no-auth-warning -a {shlex.quote(PASSWORD)}"
    mode = host.run(f"{cli} CONFIG GET protected-mode")
    assert mode.stdout.split() == ["protected-mode", "yes"], mode.stdout + mode.stderr
    policy = host.run(f"{cli} CONFIG GET maxmemory-policy")
    assert policy.stdout.split() == ["maxmemory-policy", "noeviction"], policy.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app_redis_password": "short"}, "set app_redis_password in the inventory's vault"),
        ({"app_redis": "maybe"}, "app_redis must be true or false (got 'maybe')"),
    ],
)
def test_bad_redis_settings_fail_in_preflight(tmp_path: Path, values, message):
    run = run_playbook("playbooks/preflight.yml", inventory=inventory_with(tmp_path, **values))
    assert run.rc != 0
    assert message in run.flat, run.output[-2000:]
