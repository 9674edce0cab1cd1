"""PostgreSQL between the app hosts and the db host: TLS only, the server verified (app_db_tls).

The connections start on the app hosts as the app's runtime user, with the release's own venv
(psycopg) and environment (the manage.py wrapper sources the env file), as the app does.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from clusterlib import APP, DB, LB, NAME, ROOT, WEBS, other
from testlib import https_get, inventory_with, run_playbook

testinfra_hosts = [LB]

TLS_DIR = "/etc/ssl/djdeploy/postgres"
CA = f"{TLS_DIR}/ca.crt"
ENV_FILE = f"/srv/{APP}/shared/.env"


def as_app(web: Any, code: str) -> Any:
    """Python code in the live release's Django shell, as the runtime user, with the app's env."""
    return web.run(f"runuser -u {APP} -- {APP}-manage shell -c {shlex.quote(code)}")


def last_line(result: Any) -> str:
    """What the code printed last (Django's shell prints its auto-imports first)."""
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def connect(sslmode: str) -> str:
    """psycopg code connecting to the database with the env file's credentials and this sslmode."""
    return (
        "import os, psycopg\n"
        "e = os.environ\n"
        "c = psycopg.connect(host=e['DB_HOST'], port=e['DB_PORT'], dbname=e['DB_NAME'],"
        " user=e['DB_USER'], password=e['DB_PASSWORD'], connect_timeout=5,"
        f" sslmode={sslmode!r}, sslrootcert={CA!r})\n"
        "print(c.execute('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()')"
        ".fetchone())\n"
    )


@pytest.mark.parametrize("name", WEBS)
def test_app_hosts_connect_over_tls_verifying_the_server(name):
    result = as_app(other(name), connect("verify-full"))
    assert result.rc == 0, result.stderr
    assert last_line(result).startswith("(True, 'TLSv1."), result.stdout


@pytest.mark.parametrize("name", WEBS)
def test_app_hosts_without_tls_are_refused(name):
    result = as_app(other(name), connect("disable"))
    assert result.rc != 0, result.stdout
    assert "no pg_hba.conf entry" in result.stderr, result.stderr[-2000:]
    assert "no encryption" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("name", WEBS)
def test_the_apps_own_connection_verifies_the_server(name):
    web = other(name)
    env = web.file(ENV_FILE).content_string
    assert "PGSSLMODE='verify-full'" in env
    assert f"PGSSLROOTCERT='{CA}'" in env
    assert f"?sslmode=verify-full&sslrootcert={CA}'" in env
    # What libpq used for Django's connection (options from the env included).
    code = (
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        "print(connection.connection.pgconn.ssl_in_use, connection.connection.info.dsn)\n"
    )
    result = as_app(web, code)
    assert result.rc == 0, result.stderr
    used = last_line(result)
    assert used.startswith("True "), result.stdout
    assert "sslmode=verify-full" in used.split(), used
    assert f"sslrootcert={CA}" in used.split(), used


def test_the_live_app_talks_to_postgres_over_tls_only(host):
    # Pages through the balancer (both app hosts serve), then every connection of the app's
    # role from another host, as the db server sees it.
    for _ in range(6):
        page = https_get(host, NAME, "/", cacert=ROOT)
        assert page.status == 200
        assert "Hello" in page.body
    query = (
        "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl JOIN pg_stat_activity"
        f" USING (pid) WHERE usename = '{APP}' AND client_addr IS NOT NULL"
    )
    result = other(DB).run(f"runuser -u postgres -- psql -XAtc {shlex.quote(query)}")
    assert result.rc == 0, result.stderr
    total, with_tls = (int(n) for n in result.stdout.strip().split("|"))
    assert total > 0
    assert with_tls == total, result.stdout


def test_the_ca_key_stays_on_the_db_host():
    db = other(DB)
    key = db.file(f"{TLS_DIR}/private/ca.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert db.file(f"{TLS_DIR}/private").mode == 0o700
    names = db.run(f"openssl x509 -in {TLS_DIR}/server.crt -noout -ext subjectAltName")
    assert f"IP Address:{other(DB).run('hostname -I').stdout.split()[0]}" in names.stdout
    for name in WEBS:
        web = other(name)
        assert not web.file(f"{TLS_DIR}/private").exists
        assert web.file(CA).content_string == db.file(CA).content_string
        assert web.file(CA).mode == 0o644


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app_db_tls": "maybe"}, "app_db_tls must be true or false (got 'maybe')"),
        ({"app_db_host": "localhost"}, "needs app_db_host set to the address or name"),
    ],
)
def test_bad_database_tls_settings_fail_in_preflight(tmp_path: Path, values, message):
    run = run_playbook("playbooks/preflight.yml", inventory=inventory_with(tmp_path, **values))
    assert run.rc != 0
    assert message in run.flat, run.output[-2000:]
