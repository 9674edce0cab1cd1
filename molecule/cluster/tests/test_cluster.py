"""The multi-host topology: a load balancer (TLS) in front of two app hosts and a database host.

Requests go to the balancer as a browser would: from the controller to the balancer's address
on the scenario's docker network, SNI and Host demo.test, TLS verified against Pebble's root
(the balancer's certificate comes from certbot, test_acme.py). The flows at the end change the
deployment, so they run last and in order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from clusterlib import APP, CHAIN, DB, LB, NAME, ROOT, WEB1, WEB2, WEBS, other
from testlib import (
    ADD_NOTE,
    REMOVE_NOTE,
    commit_and_push,
    hashed_static_urls,
    https_get,
    inventory_with,
    inventory_with_host_vars,
    new_migration,
    run_playbook,
    write_file,
)

from tools.probe import Probe

testinfra_hosts = [LB]

BACKENDS = f"/etc/nginx/djdeploy/{APP}/backends"
# Load during releases: steady, bounded in count and time (a test, not the benchmark).
PROBE_RATE = 20
PROBE_MAX_REQUESTS = 6000
PROBE_MAX_SECONDS = 280


def live(name: str) -> str:
    return other(name).file(f"/srv/{APP}/current").linked_to


def running_colors(name: str) -> dict[str, str]:
    """The colors whose gunicorn service runs on an app host, with the release each runs."""
    host = other(name)
    return {
        color: Path(host.file(f"/srv/{APP}/colors/{color}").linked_to).name
        for color in ("blue", "green")
        if host.service(f"{APP}@{color}.service").is_running
    }


def address(host: Any) -> str:
    return host.run("hostname -I").stdout.split()[0]


@pytest.fixture(scope="module")
def cacert(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "lb.pem"
    path.write_text(other(LB).file(ROOT).content_string)
    return str(path)


def probe(cacert: str, path: str = "/") -> Probe:
    return Probe(
        f"https://{NAME}{path}",
        connect=f"{address(other(LB))}:443",
        cacert=cacert,
        rate=PROBE_RATE,
        max_requests=PROBE_MAX_REQUESTS,
        max_seconds=PROBE_MAX_SECONDS,
    )


def push(change: str, message: str) -> str:
    """Commit a change to the app's source on the db host (it serves the repository)."""
    return commit_and_push(other(DB), change, message, app=APP)


def in_rotation(lb: Any) -> dict[str, bool]:
    return {name: "down" not in lb.file(f"{BACKENDS}/{name}.conf").content_string for name in WEBS}


def test_balancer_serves_the_app_from_both_app_hosts(host):
    logs = {name: f"/var/log/nginx/{APP}.access.log" for name in WEBS}
    before = {
        name: len(other(name).file(log).content_string.splitlines()) for name, log in logs.items()
    }
    for _ in range(8):
        page = https_get(host, NAME, "/", cacert=ROOT)
        assert page.status == 200
        assert "Hello" in page.body
    after = {
        name: len(other(name).file(log).content_string.splitlines()) for name, log in logs.items()
    }
    for name in WEBS:
        assert after[name] > before[name], f"{name} got no request through the balancer"


def test_every_app_host_is_in_rotation(host):
    assert in_rotation(host) == {WEB1: True, WEB2: True}


def test_balancer_redirects_http_and_sends_hsts(host):
    assert https_get(host, NAME, "/", scheme="http").status == 308
    page = https_get(host, NAME, "/", cacert=ROOT)
    assert "max-age=" in page.headers["strict-transport-security"]


def test_app_hosts_answer_the_balancer_only(host):
    # Other hosts do not get through the app hosts' firewall (test_firewall.py).
    for name in WEBS:
        web = address(other(name))
        probe_cmd = (
            "curl -s -o /dev/null -w '%{http_code}' -H 'Host: demo.test' "
            f"-H 'X-Forwarded-Proto: https' http://{web}:8000/healthz"
        )
        assert host.run(probe_cmd).stdout == "200"


def test_tls_and_certificates_live_on_the_balancer_only(host):
    assert host.file(CHAIN).exists
    for name in WEBS:
        web = other(name)
        assert not web.file(f"/etc/ssl/djdeploy/{APP}").exists
        assert "listen 8000" in web.file(f"/etc/nginx/sites-available/{APP}.conf").content_string


def test_database_lives_on_its_own_host(host):
    assert other(DB).service("postgresql").is_running
    for name in WEBS:
        assert not other(name).package("postgresql").is_installed


def test_static_files_fall_back_to_the_next_and_the_previous_release(host):
    """nginx looks in current, then next, then previous: a file only in one of them is served."""
    for name in WEBS:
        web = other(name)
        root = f"/srv/{APP}"
        setup = web.run(
            f"set -e; for r in next previous; do "
            f"mkdir -p {root}/static/zz-$r {root}/releases/zz-$r; "
            f"echo $r > {root}/static/zz-$r/only-in-$r.txt; "
            f"ln -sfn {root}/static/zz-$r {root}/releases/zz-$r/.djdeploy-static; "
            f"if [ -L {root}/$r ]; then cp -P {root}/$r {root}/.saved-$r; fi; "
            f"ln -sfn {root}/releases/zz-$r {root}/$r; done"
        )
        assert setup.rc == 0, setup.stderr
        try:
            for which in ("next", "previous"):
                result = web.run(
                    "curl -s -H 'Host: demo.test' -H 'X-Forwarded-Proto: https' "
                    f"http://127.0.0.1:8000/static/only-in-{which}.txt"
                )
                assert result.stdout.strip() == which
        finally:
            web.run(
                f"for r in next previous; do if [ -L {root}/.saved-$r ]; then "
                f"mv -fT {root}/.saved-$r {root}/$r; else rm -f {root}/$r; fi; "
                f"rm -rf {root}/releases/zz-$r {root}/static/zz-$r; done"
            )


def test_rolling_release_under_load_loses_no_request(host, cacert):
    before = {name: live(name) for name in WEBS}
    old_static = hashed_static_urls(https_get(host, NAME, "/", cacert=ROOT).body)
    assert old_static
    sha = push(
        "echo '/* release 2 */' >> greetings/static/greetings/site.css", "second: new static"
    )
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml")
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    assert report["sent"] > 100, report
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    for name in WEBS:
        assert live(name).endswith(sha[:8])
        assert other(name).file(f"/srv/{APP}/previous").linked_to == before[name]
    assert in_rotation(host) == {WEB1: True, WEB2: True}
    # One host per batch (release_serial 1, the default): the summary lists two batches.
    assert f"batches: {WEB1} | {WEB2}" in run.flat, run.output[-2000:]
    # Preboot (app_release_preboot, on when the switch rolls): both hosts started the release
    # before the first switch, and each switch checked the started color again instead of
    # booting it; afterwards each host runs the new release only, on one color.
    assert "TASK [release : Stage | Start the release on the idle color" in run.output
    assert run.flat.count(", recheck ") == 2, run.output[-2000:]
    for name in WEBS:
        assert list(running_colors(name).values()) == [Path(live(name)).name], name
    page = https_get(host, NAME, "/", cacert=ROOT)
    assert sha[:8] in page.body
    new_static = hashed_static_urls(page.body)
    assert set(new_static) != set(old_static)
    # A page rendered by the old release still gets its files, whichever host answers.
    for url in old_static + new_static:
        for _ in range(2):
            assert https_get(host, NAME, url, cacert=ROOT).status == 200, url


def test_rollback_under_load_loses_no_request(host, cacert, tmp_path):
    current = {name: live(name) for name in WEBS}
    previous = {name: other(name).file(f"/srv/{APP}/previous").linked_to for name in WEBS}
    load = probe(cacert).start()
    run = run_playbook("playbooks/rollback.yml")
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    for name in WEBS:
        assert live(name) == previous[name]
    # Forward again with release_serial 2 set in the inventory: both hosts in one batch.
    run = run_playbook(
        "playbooks/rollback.yml",
        "-e",
        f"release_rollback_to={Path(current[WEB1]).name}",
        inventory=inventory_with(tmp_path, release_serial=2),
    )
    assert run.rc == 0, run.output[-3000:]
    assert f"batches: {WEB1}, {WEB2}" in run.flat, run.output[-2000:]
    for name in WEBS:
        assert live(name) == current[name]


def test_a_rolling_release_without_preboot_boots_each_host_in_its_switch(host, cacert):
    """app_release_preboot false: no stage play; each host boots the release in its own switch,
    out of the balancer's rotation, one after the other, and no request fails."""
    sha = push("echo '# released without preboot' >> greetings/views.py", "no preboot")
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml", "-e", "app_release_preboot=false")
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    stage = run.output.split("TASK [release : Stage | Start the release on the idle color")[1]
    stage = stage.split("TASK [")[0]
    assert "changed:" not in stage and "ok:" not in stage, stage
    assert ", recheck " not in run.flat, run.output[-2000:]
    for name in WEBS:
        assert live(name).endswith(sha[:8]), name
        assert re.search(
            rf"{name}: \S+ on \w+ \(was .*?\), host work [0-9.]+ s \(prepare [0-9.]+, start ",
            run.flat,
        ), run.output[-2000:]
        assert list(running_colors(name).values()) == [Path(live(name)).name], name
    assert in_rotation(host) == {WEB1: True, WEB2: True}


# A nullable field the model does not declare (it only makes the release migrate).
BACKUP_NOTE = ADD_NOTE.replace('"note"', '"backup_note"')

# Fails on the first app host only (its container's hostname): the second one starts the release.
FAILING_HEALTH = """
import socket

from django.http import HttpResponse


def healthz(request):
    if socket.gethostname() == "web1":
        return HttpResponse("broken on purpose", status=500)
    return HttpResponse("ok")
"""


def inventory_refusing_ssh(tmp_path: Path, name: str) -> str:
    """The scenario's inventory where the host ``name`` refuses SSH: nothing listens on port 1
    of the controller's loopback."""
    return inventory_with_host_vars(
        tmp_path,
        name,
        ansible_connection="ansible.builtin.ssh",
        ansible_host="127.0.0.1",
        ansible_port=1,
    )


def test_an_unreachable_balancer_stops_the_release_before_anything_changes(tmp_path):
    """The preflight reaches every host as root before the build: a balancer that does not
    answer stops the run there, on every host (without it, the app hosts built the release and
    the run failed at the rotation, leaving the first app host's deploy lock held)."""
    releases = f"ls /srv/{APP}/releases"
    before = {name: other(name).run(releases).stdout for name in WEBS}
    push("echo '# the balancer is unreachable' >> greetings/views.py", "unreachable balancer")
    run = run_playbook("playbooks/release.yml", inventory=inventory_refusing_ssh(tmp_path, LB))
    assert run.rc != 0
    assert f"fatal: [{LB}]: UNREACHABLE!" in run.output, run.output[-3000:]
    # No task of the release role ran: no lock taken, nothing fetched or built.
    assert "TASK [release :" not in run.output, run.output[-3000:]
    for name in WEBS:
        assert other(name).run(releases).stdout == before[name], name
        assert not other(name).file(f"/run/djdeploy/locks/{APP}.lock").exists, name


def test_a_release_reaches_only_the_hosts_it_changes(tmp_path):
    """A release reaches the hosts it changes before anything changes: the app hosts (here the
    db host too: it runs the Celery workers) and the balancer. Another host of the inventory
    (here a monitoring host that refuses SSH, its address set in the inventory) is not reached,
    not even to gather its address (without it, the preflight failed the run on that host:
    UNREACHABLE). A db host that runs no app process is such a host: a release reaches it only
    for the backup before a migration."""
    sha = push("echo '# one more host in the inventory' >> greetings/views.py", "monitoring host")
    extra = tmp_path / "monitoring.yml"
    extra.write_text(
        "all:\n  children:\n    monitoring:\n      hosts:\n        monitor-gone:\n"
        "          ansible_connection: ansible.builtin.ssh\n"
        "          ansible_host: 127.0.0.1\n          ansible_port: 1\n"
        "          app_private_address: 127.0.0.2\n"
    )
    run = run_playbook("playbooks/release.yml", "-i", str(extra))
    assert run.rc == 0, run.output[-3000:]
    reach = run.output.split("TASK [Reach every host the run changes")[1].split("TASK [")[0]
    assert "skipping: [monitor-gone]" in reach, reach
    for name in (LB, DB, *WEBS):
        assert f"ok: [{name}]" in reach, reach
    assert "UNREACHABLE" not in run.output, run.output[-3000:]
    for name in WEBS:
        assert live(name).endswith(sha[:8]), name


def release_with_a_host_gone(tmp_path: Path, gone: str, extra_vars: dict[str, Any]) -> Any:
    """A release whose extra vars point a step at the inventory host ``gone``, which refuses
    connections (nothing listens on port 1 of the controller's loopback) and which the run's
    --limit keeps out of the preflight: a host that goes away after the preflight."""
    inventory = tmp_path / "gone.yml"
    inventory.write_text(
        f"all:\n  hosts:\n    {gone}:\n      ansible_connection: ansible.builtin.ssh\n"
        "      ansible_host: 127.0.0.1\n      ansible_port: 1\n"
    )
    return run_playbook(
        "playbooks/release.yml",
        "-i",
        str(inventory),
        "--limit",
        f"all:!{gone}",
        "-e",
        json.dumps(extra_vars),
    )


def test_a_balancer_lost_after_the_preflight_stops_the_release_and_frees_every_lock(host, tmp_path):
    """A balancer that stops answering after the preflight (here: the rotation is pointed at an
    extra inventory host, lb-gone, that the run's --limit keeps out of the preflight) fails the
    release at the first host's rotation like a failed check: the host stays in the play, its
    rescue runs and every deploy lock of the run is released (without it, the host left the play
    as unreachable, its lock stayed held and the next release was refused)."""
    before = {name: live(name) for name in WEBS}
    sha = push("echo '# a balancer goes away' >> greetings/views.py", "balancer lost")
    run = release_with_a_host_gone(tmp_path, "lb-gone", {"nginx_rotation_balancers": ["lb-gone"]})
    assert run.rc != 0
    assert (
        f"The load balancer(s) lb-gone did not answer while {WEB1} was being put out of"
        " their rotation" in run.flat
    ), run.output[-3000:]
    assert f"Whether {WEB1} is in the rotation of lb-gone is unknown" in run.flat
    assert "hosts after this one were not switched" in run.flat
    for name in WEBS:
        assert live(name) == before[name], name
        # The release both hosts had started (preboot) is stopped again: each host runs its
        # live release only.
        assert list(running_colors(name).values()) == [Path(before[name]).name], name
        assert not other(name).file(f"/run/djdeploy/locks/{APP}.lock").exists, name
    assert in_rotation(host) == {WEB1: True, WEB2: True}
    # The next release is not refused by a lock, and ships the commit.
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    for name in WEBS:
        assert live(name).endswith(sha[:8]), name


def test_failed_health_check_stops_the_release_before_any_host_switches(host, cacert):
    before = {name: live(name) for name in WEBS}
    sha = push(write_file("greetings/views.py", open_views() + FAILING_HEALTH), "health fails")
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml")
    report = load.stop()
    assert run.rc != 0
    # Preboot: the release is started on every web host before any switch, so a release that
    # does not answer its health check stops the run there, before any host left the rotation.
    assert f"did not start or answer /healthz with 200 on {WEB1}" in run.flat
    assert "No host was switched: the live release keeps serving everywhere." in run.flat
    assert "TASK [Switch | Take the host out" not in run.output, run.output[-3000:]
    # The second host started the release (its health check passed there) before the first
    # host's failure stopped the run: abort.yml stopped it again (below).
    stage = run.output.split("TASK [release : Stage | Start the release on the idle color")[1]
    assert f"changed: [{WEB2}]" in stage.split("TASK [")[0], stage[:2000]
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    for name in WEBS:
        assert live(name) == before[name], f"{name} does not serve the previous release"
        # The failed release runs nowhere (its own host stopped it; abort.yml stops it on the
        # hosts where it started).
        assert list(running_colors(name).values()) == [Path(before[name]).name], name
    assert in_rotation(host) == {WEB1: True, WEB2: True}
    # The run released its locks everywhere.
    for name in WEBS:
        assert not other(name).file(f"/run/djdeploy/locks/{APP}.lock").exists, name
    # The failed release is built but never live: nothing points current at it.
    assert not any(live(name).endswith(sha[:8]) for name in WEBS)
    # The next release fixes it and goes out normally.
    fixed = push("git revert --no-commit HEAD", "fix health")
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    for name in WEBS:
        assert live(name).endswith(fixed[:8])


def open_views() -> str:
    return other(DB).file(f"/srv/git/src/{APP}/greetings/views.py").content_string


def test_a_db_host_lost_before_the_backup_stops_the_release_and_frees_every_lock(tmp_path):
    """A db host that stops answering after the preflight (here: the pre-migrate backup is
    pointed at an extra inventory host, db-gone, that the run's --limit keeps out of the
    preflight) fails the backup like a failed dump: the first app host stays in the play, its
    rescue runs and every deploy lock of the run is released (without it, the host left the
    play as unreachable and the locks stayed held until someone broke them)."""
    before = {name: live(name) for name in WEBS}
    _name, write = new_migration(other(DB), "backup_note", BACKUP_NOTE)
    sha = push(write, "db host lost before the backup")
    run = release_with_a_host_gone(tmp_path, "db-gone", {"release_backup_host": "db-gone"})
    assert run.rc != 0
    assert "release: a host did not answer while migrating " in run.flat, run.output[-3000:]
    assert ": the db host db-gone (the backup before migrating)" in run.flat
    assert "No host was switched, the live release keeps serving." in run.flat
    # Nothing was migrated: the release after it applies the migration (below).
    for name in WEBS:
        assert live(name) == before[name], name
        assert not other(name).file(f"/run/djdeploy/locks/{APP}.lock").exists, name
        assert list(running_colors(name).values()) == [Path(before[name]).name], name
    # The next release is not refused by a lock: it backs up, migrates and ships the commit.
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    for name in WEBS:
        assert live(name).endswith(sha[:8]), name


# Migrations and the rolling release: the old release serves against the new schema until the
# last host has switched (testlib's ADD_NOTE, then REMOVE_NOTE).
def test_a_nullable_field_under_load_fails_no_request(host, cacert):
    _name, write = new_migration(other(DB), "greeting_note", ADD_NOTE)
    model = "sed -i '/^    text = /a\\    note = models.CharField(max_length=100, null=True)'"
    sha = push(f"{write} && {model} greetings/models.py", "nullable note")
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml")
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    for name in WEBS:
        assert live(name).endswith(sha[:8])


def test_the_refused_removal_would_have_failed_requests_on_the_host_not_switched(host, cacert):
    before = {name: live(name) for name in WEBS}
    name, write = new_migration(other(DB), "remove_greeting_note", REMOVE_NOTE)
    sha = push(f"{write} && sed -i '/^    note = /d' greetings/models.py", "remove note")
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml")
    refused = load.stop()
    assert run.rc != 0
    refusal = f"greetings.{name}, operation 1 (RemoveField: Remove field note from greeting)"
    assert refusal in run.flat
    assert refused["failed"] == 0, {k: refused[k] for k in ("sent", "failed", "status", "errors")}
    assert {n: live(n) for n in WEBS} == before
    # With the override the release goes out, and the old code, still serving on the host that
    # has not switched yet, answers 500 for every page that reads greetings: what the refusal
    # prevents.
    load = probe(cacert).start()
    run = run_playbook("playbooks/release.yml", "-e", "release_allow_unsafe_migrations=true")
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    for web in WEBS:
        assert live(web).endswith(sha[:8])
    assert report["failed"] > 0, report
    assert report["status"].get("500", 0) > 0, report
    print(f"allowed removal under load: {report['failed']} of {report['sent']} requests failed")
