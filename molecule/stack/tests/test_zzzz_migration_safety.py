"""Migrations that are safe for a rolling release, on the stack host.

The live release serves against the new schema until every host has switched: a migration
that removes a field the live code reads is refused before anything changes, unless the
operator allows it; a nullable field goes through. These tests change the demo app's
repository and release it, so they run last (file order) and in order; each new migration
depends on the newest one in the repository, so the file does not care what ran before.
"""

import json
import re

import pytest
from testlib import (
    ADD_NOTE,
    REMOVE_NOTE,
    commit_and_push,
    https_get,
    live_release,
    new_migration,
    run_playbook,
)
from testlib import assert_serving as serving

# Controller-side logic: runs on the primary distro only (conftest.py).
pytestmark = pytest.mark.primary_distro(reason="controller-side logic")

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
LOCK = f"/run/djdeploy/locks/{APP}.lock"
NOTE_COLUMN = (
    "SELECT count(*) FROM information_schema.columns"
    " WHERE table_name = 'greetings_greeting' AND column_name = 'note'"
)

# What the tests hand on to each other (they run in file order).
state: dict[str, str] = {}


def live(host) -> str:
    return live_release(host, APP)


def assert_serving(host, release: str) -> None:
    serving(host, release, APP, NAME)


def psql(host, sql: str) -> str:
    result = host.run(f"runuser -u postgres -- psql -X -At -d {APP} -c {sql!r}")
    assert result.rc == 0, result.stderr
    return str(result.stdout.strip())


def migrations_record(host, release: str) -> list:
    return json.loads(host.file(f"{release}/.djdeploy-migrations.json").content_string)


def test_a_nullable_field_is_released_without_refusal(host):
    name, write = new_migration(host, "greeting_note", ADD_NOTE)
    model = "sed -i '/^    text = /a\\    note = models.CharField(max_length=100, null=True)'"
    sha = commit_and_push(host, f"{write} && {model} greetings/models.py", "nullable note")
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    assert "not safe for the live release" not in run.flat
    after = live(host)
    assert after.endswith(sha[:8])
    assert_serving(host, after)
    assert psql(host, NOTE_COLUMN) == "1"
    assert migrations_record(host, after) == [{"name": f"greetings.{name}", "reversible": True}]


def test_removing_a_field_the_live_code_reads_is_refused_and_it_keeps_serving(host):
    before = live(host)
    name, write = new_migration(host, "remove_greeting_note", REMOVE_NOTE)
    sha = commit_and_push(
        host, f"{write} && sed -i '/^    note = /d' greetings/models.py", "remove note"
    )
    run = run_playbook("playbooks/release.yml")
    assert run.rc != 0
    flat = run.flat
    headline = (
        rf"release: the migrations of \S+-{sha[:8]} are not safe for the live release"
        rf" {re.escape(before.rsplit('/', 1)[-1])}"
    )
    assert re.search(headline, flat), flat[-3000:]
    assert "Nothing was migrated and no host was switched" in flat
    assert (
        f"greetings.{name}, operation 1 (RemoveField: Remove field note from greeting): unsafe,"
        " the live code still reads and writes this column" in flat
    ), flat[-3000:]
    assert "expand/contract" in flat
    assert "-e release_allow_unsafe_migrations=true" in flat
    # Refused before the backup and before anything changed.
    assert "Dump the database" not in run.output
    assert "Run migrate" not in run.output
    assert psql(host, NOTE_COLUMN) == "1"
    assert not host.file(LOCK).exists
    assert_serving(host, before)
    # The refused release is marked: a rollback never switches to code whose migrations did
    # not run.
    built = host.run(f"ls -d /srv/{APP}/releases/*-{sha[:8]}").stdout.split()
    assert built
    for path in built:
        marker = host.file(f"{path}/.djdeploy-failed.json").content_string
        assert "unsafe migrations refused" in marker
    state["remove"] = f"greetings.{name}"


def test_the_operator_can_allow_the_removal_and_the_record_says_so(host):
    before = live(host)
    allow = json.dumps({"release_allow_unsafe_migrations_list": [state["remove"]]})
    run = run_playbook("playbooks/release.yml", "-e", allow)
    assert run.rc == 0, run.output[-3000:]
    after = live(host)
    assert after != before
    assert_serving(host, after)
    assert psql(host, NOTE_COLUMN) == "0"
    assert migrations_record(host, after) == [
        {
            "name": state["remove"],
            "reversible": True,
            "unsafe": ["RemoveField: Remove field note from greeting (unsafe)"],
            "allowed_by": "release_allow_unsafe_migrations_list",
        }
    ]
    # What the refusal protected: the code that was live before cannot read greetings any more
    # (every host that had not switched yet would have answered 500).
    old = host.run(
        f"runuser -u {APP} -- env DJDEPLOY_RELEASE_DIR={before} /usr/local/bin/{APP}-manage shell"
        " -c 'from greetings.models import Greeting; list(Greeting.objects.all())'"
    )
    assert old.rc != 0
    assert "greetings_greeting.note does not exist" in old.stderr, old.stderr[-2000:]
    assert https_get(host, NAME, "/", cacert=CERT).status == 200
    # playbooks/releases.yml shows what each release applied and what was allowed.
    run = run_playbook("playbooks/releases.yml")
    assert run.rc == 0, run.output[-3000:]
    assert (
        f"{state['remove']} (reversible, unsafe allowed by release_allow_unsafe_migrations_list:"
        " RemoveField: Remove field note from greeting (unsafe))" in run.flat
    ), run.output[-3000:]
    assert f"* {after.rsplit('/', 1)[-1]}" in run.flat
    assert "FAILED: unsafe migrations refused" in run.flat
