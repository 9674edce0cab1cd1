"""Database backup before migrations and playbooks/restore.yml, round trip on the stack host.

These tests change the deployment and run in order, after test_stack.py and before
test_zz_release_flow.py. They leave it as that file expects: the repository's main has the
demo app without the probe migration, released and live, the database at the state of the
greetings migrations 0001 and 0002 (the probe migration is restored away and its file
removed again, so test_zz's 0003_second_greeting does not conflict with it).
"""

import json

import pytest
from testlib import commit_and_push, https_get, run_playbook, write_file

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
BACKUPS = f"/var/backups/djdeploy/{APP}"
LOCK = f"/run/djdeploy/locks/{APP}.lock"
PROBE = "greetings/migrations/0003_backup_probe.py"
ROWS = "SELECT id, text, created FROM greetings_greeting ORDER BY id"
MIGRATIONS = "SELECT app, name FROM django_migrations ORDER BY id"

# A schema change and a row: the restore must take both away again. Raw SQL is "unknown" to the
# migration safety check, which refuses it while a release is live: the runs allow it.
ALLOW = "release_allow_unsafe_migrations=true"
MIGRATION = """from django.db import migrations


def add(apps, schema_editor):
    apps.get_model("greetings", "Greeting").objects.create(text="Backup probe")


class Migration(migrations.Migration):
    dependencies = [("greetings", "0002_hello_greeting")]
    operations = [
        migrations.RunSQL("CREATE TABLE greetings_backup_probe (id serial PRIMARY KEY, note text)"),
        migrations.RunPython(add, migrations.RunPython.noop),
    ]
"""

# What the tests hand on to each other (they run in file order).
state: dict[str, object] = {}


def psql(host, sql):
    result = host.run(f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {APP} -c {sql!r}")
    assert result.rc == 0, result.stderr
    return result.stdout


def dumps(host, kind="pre-migrate"):
    listing = host.run(f"ls -1 {BACKUPS}")
    assert listing.rc == 0, listing.stderr
    return sorted(n for n in listing.stdout.split() if n.endswith(f"-{kind}.dump"))


def live(host):
    return host.file(f"/srv/{APP}/current").linked_to


def assert_dump(host, path):
    dump = host.file(path)
    assert dump.is_file
    assert dump.mode == 0o600
    assert dump.user == "postgres"
    listed = host.run(f"runuser -u postgres -- pg_restore --list {path}")
    assert listed.rc == 0, listed.stderr
    assert "TABLE DATA public greetings_greeting" in listed.stdout


def test_a_failed_backup_stops_the_release_before_migrate(host):
    before = live(host)
    commit_and_push(host, write_file(PROBE, MIGRATION), "backup probe")
    state["rows"], state["migrations"] = psql(host, ROWS), psql(host, MIGRATIONS)
    run = run_playbook(
        "playbooks/release.yml", "-e", ALLOW, "-e", "release_backup_dir=/dev/null/backups"
    )
    assert run.rc != 0
    assert "the database backup before migrating" in run.output
    assert "nothing was migrated and no host was switched" in run.output
    assert "Run migrate" not in run.output
    assert psql(host, MIGRATIONS) == state["migrations"]
    assert not host.file(LOCK).exists
    assert live(host) == before
    assert https_get(host, NAME, "/", cacert=CERT).status == 200


def test_a_release_with_migrations_backs_up_first_and_keeps_the_newest(host):
    # Old dumps of both kinds: retention removes the oldest pre-migrate ones only.
    planted = [f"2000010{i}T000000Z-0000000{i}-pre-migrate.dump" for i in range(1, 4)]
    planted_restore = "20000101T000000Z-pre-restore.dump"
    for name in [*planted, planted_restore]:
        assert host.run(f"runuser -u postgres -- touch {BACKUPS}/{name}").rc == 0
    before = dumps(host)
    run = run_playbook("playbooks/release.yml", "-e", ALLOW, "-e", "release_backup_keep=2")
    assert run.rc == 0, run.output[-3000:]
    release_id = live(host).rsplit("/", 1)[-1]
    name = f"{release_id}-pre-migrate.dump"
    # Dumped before migrate ran, and the migration was applied after it.
    assert run.output.index("Backup | Dump the database") < run.output.index(
        "Migrate | Run migrate"
    )
    assert "Backup probe" in https_get(host, NAME, "/", cacert=CERT).body
    assert dumps(host) == sorted([*before, name])[-2:]
    assert name in dumps(host)
    assert planted_restore in dumps(host, "pre-restore")
    assert host.run(f"rm -f {BACKUPS}/{planted_restore}").rc == 0
    backups = host.file(BACKUPS)
    assert backups.mode == 0o700
    assert backups.user == "postgres"
    assert_dump(host, f"{BACKUPS}/{name}")
    assert not host.run(f"ls -A {BACKUPS} | grep partial").stdout
    record = host.file(f"/srv/{APP}/current/.djdeploy-backup.json").content_string
    assert f"{BACKUPS}/{name}" in record
    # The migrations record notes the unknown operation and what allowed it.
    applied = host.file(f"/srv/{APP}/current/.djdeploy-migrations.json").content_string
    assert json.loads(applied) == [
        {
            "name": "greetings.0003_backup_probe",
            "reversible": False,
            "unsafe": ["RunSQL: Raw SQL operation (unknown)"],
            "allowed_by": "release_allow_unsafe_migrations",
        }
    ]
    state["backup"] = name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "Confirm with -e restore_confirm=demo"),
        (["-e", "restore_confirm=prod"], "Confirm with -e restore_confirm=demo (got prod)"),
        (
            ["-e", "restore_backup=no-such.dump", "-e", "restore_confirm=demo"],
            "Available (oldest first):",
        ),
        (["-e", "restore_backup=../../etc/passwd", "-e", "restore_confirm=demo"], "no directory"),
    ],
    ids=["unconfirmed", "wrong-confirmation", "unknown-backup", "path-as-name"],
)
def test_restore_refuses_without_changing_anything(host, extra, message):
    rows, listing = psql(host, ROWS), host.run(f"ls -l --full-time {BACKUPS}").stdout
    run = run_playbook("playbooks/restore.yml", *extra)
    assert run.rc != 0
    assert message in run.output
    if "oldest first" in message:
        # The error names the dumps there are.
        assert str(state["backup"]) in run.output
    assert "changed=0" in run.output
    assert psql(host, ROWS) == rows
    assert host.run(f"ls -l --full-time {BACKUPS}").stdout == listing


def test_restore_brings_back_the_database_of_the_backup(host):
    psql(host, "UPDATE greetings_greeting SET text = 'changed after the backup'")
    psql(
        host,
        "INSERT INTO greetings_greeting (text, created) VALUES ('added after the backup', now())",
    )
    assert psql(host, ROWS) != state["rows"]
    safety_before = dumps(host, "pre-restore")
    run = run_playbook("playbooks/restore.yml", "-e", "restore_confirm=demo")
    assert run.rc == 0, run.output[-3000:]
    # The default is the newest pre-migrate dump: the one of the probe release.
    assert f"Restored {BACKUPS}/{state['backup']}" in run.output
    assert psql(host, ROWS) == state["rows"]
    assert psql(host, MIGRATIONS) == state["migrations"]
    # The table the migration created is gone too, not just the rows.
    assert psql(host, "SELECT to_regclass('greetings_backup_probe') IS NULL") == "t\n"
    # Everything belongs to the app role again, and the app reads and writes.
    assert (
        psql(host, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        == f"{APP}\n"
    )
    write = host.run(
        f"runuser -u {APP} -- /usr/local/bin/{APP}-manage shell -c "
        "\"from greetings.models import Greeting; Greeting.objects.create(text='w').delete()\""
    )
    assert write.rc == 0, write.stderr
    page = https_get(host, NAME, "/", cacert=CERT)
    assert page.status == 200
    assert "Hello from PostgreSQL" in page.body
    assert "Backup probe" not in page.body
    assert "changed after the backup" not in page.body
    # The content before the restore was dumped first.
    (safety,) = set(dumps(host, "pre-restore")) - set(safety_before)
    assert_dump(host, f"{BACKUPS}/{safety}")


def test_a_release_without_migrations_takes_no_backup(host):
    # Also hands test_zz_release_flow.py a main without the probe migration (its 0003 would
    # conflict with it), released, with the database matching it.
    before = dumps(host)
    commit_and_push(host, f"git rm -q {PROBE}", "drop the backup probe")
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    assert dumps(host) == before
    assert host.file(f"/srv/{APP}/current/.djdeploy-migrations.json").content_string.strip() == "[]"
    assert not host.file(f"/srv/{APP}/current/.djdeploy-backup.json").exists
    assert https_get(host, NAME, "/", cacert=CERT).status == 200
