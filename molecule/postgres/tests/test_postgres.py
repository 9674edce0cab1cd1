"""Verify the postgres role as the apps and an operator would find the server."""

import shlex

import pytest

# Test fixtures from converge.yml: database -> (role, password).
APPS = {
    "shop": ("shop", "shop-test-password-1"),
    "blog": ("blog_app", "blog-test-password-2"),
}
# PostgreSQL major version Debian ships, per Debian major version.
EXPECTED_MAJOR = {"12": "15", "13": "17"}


@pytest.fixture(scope="module")
def major(host):
    os_release = host.file("/etc/os-release").content_string
    fields = dict(line.split("=", 1) for line in os_release.splitlines() if "=" in line)
    return EXPECTED_MAJOR[fields["VERSION_ID"].strip('"')]


def admin_sql(host, sql, db="postgres"):
    """Run SQL as the postgres superuser over the local socket; return the rows."""
    result = host.run(
        f"runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1 -d {db} -c {shlex.quote(sql)}"
    )
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def app_psql(host, user, password, db, sql, address="127.0.0.1"):
    """Connect as an app role over TCP, the way the app does."""
    return host.run(
        f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5 psql -XAt -v ON_ERROR_STOP=1 "
        f"-h {address} -U {user} -d {db} -c {shlex.quote(sql)}"
    )


def test_server_version_and_unit(host, major):
    assert host.package(f"postgresql-{major}").is_installed
    assert host.package("python3-psycopg2").is_installed
    unit = host.service(f"postgresql@{major}-main")
    assert unit.is_running
    assert unit.is_enabled
    assert admin_sql(host, "SHOW server_version_num")[:2] == major


def test_listens_only_on_loopback(host):
    # Nothing else listens on 5432 here; ss cannot name the owning process in the container.
    result = host.run("ss -Hltn 'sport = :5432'")
    assert result.rc == 0, result.stderr
    addresses = {
        line.split()[3].rsplit(":", 1)[0].strip("[]") for line in result.stdout.splitlines()
    }
    assert "127.0.0.1" in addresses, result.stdout
    assert addresses <= {"127.0.0.1", "::1"}, result.stdout


def test_settings_applied(host, major):
    # shared_buffers and max_connections only apply on restart: this proves the handler ran.
    assert admin_sql(host, "SHOW password_encryption") == "scram-sha-256"
    assert admin_sql(host, "SHOW listen_addresses") == "localhost"
    assert admin_sql(host, "SHOW max_connections") == "50"
    assert admin_sql(host, "SHOW shared_buffers") == "64MB"
    assert admin_sql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    drop_in = host.file(f"/etc/postgresql/{major}/main/conf.d/51-djdeploy-reload.conf")
    assert drop_in.contains("^password_encryption = 'scram-sha-256'$")


def test_hba_file_is_strict(host, major):
    hba = host.file(f"/etc/postgresql/{major}/main/pg_hba.conf")
    assert hba.user == "postgres"
    assert hba.mode == 0o640
    rules = [
        line.split()
        for line in hba.content_string.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    methods = {rule[-1] for rule in rules}
    assert methods <= {"peer", "scram-sha-256"}, rules
    # No rule for every database or every user, except the superuser's peer login.
    broad = [
        r for r in rules if "all" in (r[1], r[2]) and r != ["local", "all", "postgres", "peer"]
    ]
    assert not broad, broad
    # What the server actually loaded has no error and no weak method either.
    assert admin_sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    assert (
        admin_sql(
            host,
            "SELECT count(*) FROM pg_hba_file_rules "
            "WHERE auth_method NOT IN ('peer', 'scram-sha-256')",
        )
        == "0"
    )


def test_hba_entries_of_both_apps(host):
    loaded = admin_sql(
        host,
        "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
        "coalesce(address || '/' || netmask, ''), auth_method FROM pg_hba_file_rules",
    ).splitlines()
    for db, (user, _) in APPS.items():
        assert f"local|{db}|{user}||scram-sha-256" in loaded, loaded
        assert f"host|{db}|{user}|127.0.0.1/255.255.255.255|scram-sha-256" in loaded, loaded
    # Remote app hosts only for the app that asked for them, only for its database and role.
    assert "host|blog|blog_app|192.0.2.0/255.255.255.0|scram-sha-256" in loaded, loaded
    assert "host|blog|blog_app|2001:db8::/ffff:ffff:ffff:ffff::|scram-sha-256" in loaded, loaded
    remote = [
        r for r in loaded if r.startswith("host|") and "127.0.0.1/" not in r and "|::1/" not in r
    ]
    assert all(r.startswith("host|blog|blog_app|") for r in remote), remote


@pytest.mark.parametrize("db", sorted(APPS))
def test_app_connects_and_can_migrate(host, db):
    user, password = APPS[db]
    assert app_psql(host, user, password, db, "SELECT 1").stdout.strip() == "1"
    # What `manage.py migrate` does: create a table in the public schema, use it.
    result = app_psql(
        host,
        user,
        password,
        db,
        "CREATE TABLE IF NOT EXISTS verify_migration (id serial PRIMARY KEY, note text); "
        "INSERT INTO verify_migration (note) VALUES ('ok'); "
        "SELECT count(*) > 0 FROM verify_migration; DROP TABLE verify_migration;",
    )
    assert result.rc == 0, result.stderr
    assert "t" in result.stdout.split()
    # Also over IPv6 loopback when the container has it.
    if host.run("ip -6 addr show dev lo | grep -q '::1/128'").rc == 0:
        assert app_psql(host, user, password, db, "SELECT 1", address="::1").rc == 0


def test_wrong_password_refused(host):
    result = app_psql(host, "shop", "not-the-password-at-all", "shop", "SELECT 1")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_app_cannot_reach_the_other_apps_database(host):
    user, password = APPS["shop"]
    result = app_psql(host, user, password, "blog", "SELECT 1")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr, result.stderr
    # Also refused below pg_hba.conf: PUBLIC has no CONNECT on an app database.
    assert admin_sql(host, "SELECT has_database_privilege('shop', 'blog', 'CONNECT')") == "f"
    assert admin_sql(host, "SELECT has_database_privilege('blog_app', 'blog', 'CONNECT')") == "t"
    result = app_psql(host, user, password, "postgres", "SELECT 1")
    assert result.rc != 0


@pytest.mark.parametrize("db", sorted(APPS))
def test_app_role_is_unprivileged(host, db):
    user, password = APPS[db]
    attrs = admin_sql(
        host,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
        f"FROM pg_roles WHERE rolname = '{user}'",
    )
    assert attrs == "f|f|f|f|f|t"
    assert (
        admin_sql(host, f"SELECT datdba::regrole FROM pg_database WHERE datname = '{db}'") == user
    )
    # PUBLIC has neither CONNECT nor TEMPORARY on the app database.
    acl = admin_sql(host, f"SELECT datacl FROM pg_database WHERE datname = '{db}'")
    assert "=Tc/" not in acl and "=c/" not in acl and "=T/" not in acl, acl
    for sql, error in (
        ("CREATE DATABASE verify_nope", "permission denied to create database"),
        ("CREATE ROLE verify_nope", "permission denied to create role"),
    ):
        result = app_psql(host, user, password, db, sql)
        assert result.rc != 0
        assert error in result.stderr, result.stderr


@pytest.mark.parametrize("db", sorted(APPS))
def test_password_stored_as_scram(host, db):
    user, _ = APPS[db]
    verifier = admin_sql(host, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'")
    assert verifier.startswith("SCRAM-SHA-256$")


@pytest.mark.parametrize("db", sorted(APPS))
def test_database_encoding_and_locale(host, db):
    row = admin_sql(
        host,
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype "
        f"FROM pg_database WHERE datname = '{db}'",
    )
    assert row == "UTF8|C.UTF-8|C.UTF-8"


def test_systemd_healthy(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", failed
