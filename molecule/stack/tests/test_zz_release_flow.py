"""Release flows run from the controller like CI would: bad input, a second commit, a second app.

These tests change the deployment, so they run last (file order) and in order.
"""

import re

import pytest
from testlib import assert_serving as serving
from testlib import (
    commit_and_push,
    https_get,
    inventory_without,
    live_invocation,
    live_release,
    run_playbook,
    write_file,
)

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"


def live(host):
    return live_release(host, APP)


def assert_serving(host, release):
    serving(host, release, APP, NAME)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("app_ref=no-such-branch", "the ref 'no-such-branch' does not exist"),
        ("app_repo=/srv/git/missing.git", "cannot read the git repository '/srv/git/missing.git'"),
        ("app_secret_key=too-short", "app_secret_key must be at least 50 characters"),
        ("app_server=foo", "app_server must be wsgi or asgi (got 'foo')"),
        # An input of a later play (the switch's), checked in the build play before the lock.
        (
            "release_health_retries=abc",
            "argument 'release_health_retries' is of type str and we were unable to convert to int",
        ),
        # The nginx role's rotation (the switch imports it without checking it again): the same.
        (
            "nginx_rotation_delay=abc",
            "argument 'nginx_rotation_delay' is of type str and we were unable to convert to int",
        ),
    ],
    ids=[
        "unknown-ref",
        "missing-repository",
        "short-secret",
        "unknown-app-server",
        "switch-option-type",
        "rotation-option-type",
    ],
)
def test_bad_input_fails_clearly_and_keeps_serving(host, extra, message):
    before = live(host)
    run = run_playbook("playbooks/release.yml", "-e", extra)
    assert run.rc != 0
    assert message in run.flat
    assert_serving(host, before)
    # Refused before the deploy lock was taken, or with the lock released: the next run goes.
    assert not host.file(f"/run/djdeploy/locks/{APP}.lock").exists


def test_missing_secret_fails_before_any_change(host, tmp_path):
    before = live(host)
    inventory = inventory_without(tmp_path, "app_secret_key")
    run = run_playbook("site.yml", inventory=inventory)
    assert run.rc != 0
    assert "Missing secret(s): app_secret_key" in run.output
    assert "changed=0" in run.output
    assert_serving(host, before)


def test_second_commit_is_released_and_switched(host):
    before = live(host)
    sha = commit_and_push(host, "echo change >> CHANGES.txt", "second")
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    after = live(host)
    assert after != before
    assert after.endswith(sha[:8])
    assert host.file(before).is_directory, "the previous release was pruned"
    assert host.file(f"/srv/{APP}/previous").linked_to == before
    assert_serving(host, after)
    # The run ends with its summary: the release, the batches, one line per host with the
    # switch module's step timings.
    release_id = after.rsplit("/", 1)[-1]
    headline = f"release of {APP}: {release_id} (commit {sha[:12]}), 1 of 1 host(s) switched"
    assert headline in run.flat, run.output[-2000:]
    host_line = (
        rf"{re.escape(release_id)} on (blue|green) \(was \S+ on (blue|green)\),"
        r" host work [0-9.]+ s \(prepare [0-9.]+, start"
    )
    assert re.search(host_line, run.flat), run.output[-2000:]
    # Same requirements: the venv was reused, not rebuilt.
    venv = ".djdeploy-venv"
    assert host.file(f"{after}/{venv}").linked_to == host.file(f"{before}/{venv}").linked_to


def test_release_of_the_same_commit_changes_nothing(host):
    before = live(host)
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    assert run.changed == 0, run.output[-3000:]
    assert live(host) == before


def test_a_held_lock_refuses_a_release_until_broken(host):
    owner = '{"who": "alice", "since": "2026-01-01T00:00:00Z", "action": "release", "run": "x"}'
    lock = f"/run/djdeploy/locks/{APP}.lock"
    held = host.run(f"install -d -m 0700 /run/djdeploy/locks && echo '{owner}' > {lock}")
    assert held.rc == 0
    run = run_playbook("playbooks/release.yml")
    assert run.rc != 0
    assert "locked by alice since 2026-01-01T00:00:00Z" in run.output
    assert "release_break_lock=true" in run.output
    run = run_playbook("playbooks/release.yml", "-e", "release_break_lock=true")
    assert run.rc == 0, run.output[-3000:]
    assert not host.file(lock).exists


def test_rollback_switches_back_without_a_build_and_forward_again(host):
    current = live(host)
    previous = host.file(f"/srv/{APP}/previous").linked_to
    run = run_playbook("playbooks/rollback.yml")
    assert run.rc == 0, run.output[-3000:]
    assert "Build |" not in run.output
    assert f"rollback of {APP}: {previous.rsplit('/', 1)[-1]}" in run.flat
    assert_serving(host, previous)
    run = run_playbook(
        "playbooks/rollback.yml", "-e", f"release_rollback_to={current.rsplit('/', 1)[-1]}"
    )
    assert run.rc == 0, run.output[-3000:]
    assert_serving(host, current)


def revert(host) -> None:
    """Undo the last commit with a new one (the release history moves forward only)."""
    commit_and_push(host, "git revert --no-commit HEAD", "revert")


FAILING_MIGRATION = """from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("this migration fails on purpose")


class Migration(migrations.Migration):
    dependencies = [("greetings", "0002_hello_greeting")]
    operations = [migrations.RunPython(fail, migrations.RunPython.noop)]
"""


@pytest.mark.parametrize(
    ("change", "messages"),
    [
        (
            "echo 'raise RuntimeError(\"boot fails on purpose\")' >> demo/asgi.py",
            ["did not start or answer /healthz with 200", "boot fails on purpose"],
        ),
        (
            "echo djdeploy-no-such-package==0.0.1 >> requirements.txt",
            ["installing the dependencies of", "djdeploy-no-such-package"],
        ),
        (
            write_file("greetings/migrations/0003_fails.py", FAILING_MIGRATION),
            ["migrating the database from", "failed; no host was switched", "fails on purpose"],
        ),
    ],
    ids=["app-does-not-boot", "pip-install-fails", "migration-fails"],
)
def test_failed_release_keeps_the_live_one_and_says_why(host, change, messages):
    before = live(host)
    sha = commit_and_push(host, change, "breaks")
    try:
        run = run_playbook("playbooks/release.yml")
        assert run.rc != 0
        for message in messages:
            assert message in run.flat, run.output[-3000:]
        assert_serving(host, before)
        # No lock is left behind, and the failed release is removed or marked.
        assert not host.file(f"/run/djdeploy/locks/{APP}.lock").exists
        built = host.run(f"ls -d /srv/{APP}/releases/*-{sha[:8]} 2>/dev/null").stdout.split()
        for path in built:
            assert host.file(f"{path}/.djdeploy-failed.json").exists, f"{path} is not marked"
    finally:
        revert(host)


MIGRATION = """from django.db import migrations


def add(apps, schema_editor):
    apps.get_model("greetings", "Greeting").objects.create(text="Second greeting")


class Migration(migrations.Migration):
    dependencies = [("greetings", "0002_hello_greeting")]
    operations = [migrations.RunPython(add, migrations.RunPython.noop)]
"""


def test_rollback_past_a_migration_is_refused_unless_allowed(host):
    before = live(host)
    commit_and_push(
        host, write_file("greetings/migrations/0003_second_greeting.py", MIGRATION), "migration"
    )
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    after = live(host)
    assert "Second greeting" in https_get(host, NAME, "/", cacert=CERT).body
    run = run_playbook("playbooks/rollback.yml")
    assert run.rc != 0
    assert "applied migrations" in run.output
    assert "greetings.0003_second_greeting" in run.output
    # Only what came after the target counts, not the migrations of older releases.
    assert "greetings.0001_initial" not in run.output
    assert_serving(host, after)
    run = run_playbook("playbooks/rollback.yml", "-e", "release_rollback_allow_migrations=true")
    assert run.rc == 0, run.output[-3000:]
    assert_serving(host, before)


LEGACY = (
    '{"app_name": "legacy", "app_server_names": ["legacy.test"], '
    '"app_repo": "/srv/git/legacy.git", "app_server": "wsgi", '
    '"app_wsgi_module": "legacysite.wsgi:application", '
    '"app_settings_module": "legacysite.settings", "app_settings_overlay": true, '
    '"app_python_path": ["src"], "app_db_password": "legacy-db-password-1", '
    # The demo app's commands, processes and schedules (the stack inventory) are not legacy's.
    '"app_build_commands": [], "app_release_commands": [], "app_processes": {}, '
    '"app_schedules": {}}'
)
LEGACY_CERT = "/etc/ssl/djdeploy/legacy/fullchain.pem"


def app_state(host, app: str) -> tuple[str, str]:
    """The app's live release and the invocation of its live gunicorn (changes on restart)."""
    return live_release(host, app), live_invocation(host, app)


def test_second_app_with_another_shape_deploys_beside_the_first(host):
    run = run_playbook("site.yml", "-e", LEGACY)
    assert run.rc == 0, run.output[-4000:]
    page = https_get(host, "legacy.test", "/", cacert="/etc/ssl/djdeploy/legacy/fullchain.pem")
    assert page.status == 200
    assert "Legacy app: 3 items" in page.body
    # The first app is untouched and still serves.
    assert https_get(host, NAME, "/", cacert=CERT).status == 200


def test_each_app_releases_and_rolls_back_without_touching_the_other(host):
    demo = app_state(host, APP)
    before = app_state(host, "legacy")
    commit_and_push(host, "echo change >> CHANGES.txt", "second", app="legacy")
    run = run_playbook("playbooks/release.yml", "-e", LEGACY)
    assert run.rc == 0, run.output[-3000:]
    assert app_state(host, "legacy")[0] != before[0]
    run = run_playbook("playbooks/rollback.yml", "-e", LEGACY)
    assert run.rc == 0, run.output[-3000:]
    assert app_state(host, "legacy")[0] == before[0]
    assert "Legacy app: 3 items" in https_get(host, "legacy.test", "/", cacert=LEGACY_CERT).body
    # The demo app kept its release and its gunicorn process throughout.
    assert app_state(host, APP) == demo
    assert_serving(host, demo[0])
    # And the other way round: rolling the demo app back leaves the legacy app alone.
    legacy = app_state(host, "legacy")
    run = run_playbook("playbooks/rollback.yml", "-e", "release_rollback_allow_migrations=true")
    assert run.rc == 0, run.output[-3000:]
    assert app_state(host, APP)[0] != demo[0]
    assert app_state(host, "legacy") == legacy


def test_each_build_user_reads_its_own_apps_secrets_only(host):
    for app, other in ((APP, "legacy"), ("legacy", APP)):
        assert host.run(f"runuser -u {app}-build -- test -r /srv/{app}/shared/.env").rc == 0
        assert host.run(f"runuser -u {app}-build -- cat /srv/{other}/shared/.env").rc != 0
