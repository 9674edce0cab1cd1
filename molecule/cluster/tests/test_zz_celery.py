"""Celery on the cluster (issue 10): a worker on each app host, beat as a singleton, Redis on
the db host as the broker (app_redis), tasks queued over HTTPS through the balancer. The db host
is also a worker-only host (group `worker`): it runs the `offload` worker, which consumes its own
queue, and nothing of the web tier.

The cluster's copy of the demo app adds celery[redis] (prepare.yml); greetings.tasks.record
appends one line per run to a Redis list per token, so a task that ran twice shows twice.
Runs after test_cluster.py's flows (file order) and releases again, under load.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid

import pytest
from clusterlib import APP, DB, LB, NAME, ROOT, WEB1, WEB2, other
from testlib import commit_and_push, https_from_controller, run_playbook

from tools.probe import Probe

testinfra_hosts = [LB]

REDIS_PASSWORD = "molecule-redis-password-1"
# Tasks queued during a release: one every ENQUEUE_EVERY seconds, each working TASK_SECONDS,
# at most ENQUEUE_MAX of them (bounded in count and time).
ENQUEUE_EVERY = 0.5
ENQUEUE_MAX = 400
TASK_SECONDS = 1.0


@pytest.fixture(scope="module", autouse=True)
def balancer(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Requests go from the controller to the balancer's address, as a browser's would."""
    cafile = tmp_path_factory.mktemp("tls") / "lb.pem"
    cafile.write_text(other(LB).file(ROOT).content_string)
    BALANCER["address"] = other(LB).run("hostname -I").stdout.split()[0]
    BALANCER["cafile"] = str(cafile)


BALANCER: dict[str, str] = {}


def get(path: str) -> tuple[int, str]:
    status, _, body = https_from_controller(BALANCER["address"], NAME, path, BALANCER["cafile"])
    return status, body


def enqueue(token: str, seconds: float = 0.0, queue: str = "") -> None:
    where = f"&queue={queue}" if queue else ""
    status, body = get(f"/tasks/{token}/enqueue?seconds={seconds}{where}")
    assert status == 202, (status, body[-500:])


def runs(token: str) -> list[str]:
    status, body = get(f"/tasks/{token}")
    assert status == 200, (status, body[-500:])
    return list(json.loads(body)["runs"])


def wait_for_runs(tokens: list[str], timeout: float = 90.0) -> dict[str, list[str]]:
    """Every token's runs once each has at least one (bounded), then a moment more so a
    second run would show too."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        found = {t: runs(t) for t in tokens}
        if all(found.values()):
            break
        time.sleep(1)
    time.sleep(3)
    return {t: runs(t) for t in tokens}


def redis_list(key: str) -> list[str]:
    out = other(DB).run(f"redis-cli --no-auth-warning -a {REDIS_PASSWORD} lrange {key} 0 -1")
    assert out.rc == 0, out.stderr
    return out.stdout.split("\n")[:-1] if out.stdout else []


def test_a_task_queued_over_https_runs_once_on_a_worker():
    token = f"t-{uuid.uuid4().hex[:10]}"
    enqueue(token)
    found = wait_for_runs([token])[token]
    assert len(found) == 1, found
    host = found[0].split(":")[0]
    assert host in ("web1", "web2"), found


def test_workers_on_each_app_host_and_beat_on_one():
    for name in (WEB1, WEB2):
        assert other(name).service(f"{APP}-worker@1.service").is_running
    assert other(WEB1).service(f"{APP}-beat@1.service").is_running
    assert not other(WEB2).service(f"{APP}-beat@1.service").is_running
    assert (
        not other(WEB2)
        .file(f"/etc/systemd/system/multi-user.target.wants/{APP}-beat@1.service")
        .exists
    )


def live_release(name: str) -> str:
    return str(other(name).file(f"/srv/{APP}/current").linked_to).rsplit("/", 1)[1]


def test_offload_runs_on_the_worker_only_host_only_and_no_web_tier_there():
    """`offload` (group worker: the db host) runs there and nowhere else; the db host runs none
    of the web hosts' processes, no gunicorn and no nginx vhost of the app, and serves the same
    release as the web hosts (released with them)."""
    db = other(DB)
    assert db.service(f"{APP}-offload@1.service").is_running
    assert db.service(f"{APP}-offload@1.service").is_enabled
    for name in (WEB1, WEB2):
        web = other(name)
        assert not web.service(f"{APP}-offload@1.service").is_running, name
        wants = f"/etc/systemd/system/multi-user.target.wants/{APP}-offload@1.service"
        assert not web.file(wants).exists, name
    for unit in (f"{APP}-worker@1.service", f"{APP}-beat@1.service"):
        assert not db.service(unit).is_running, unit
        assert not db.file(f"/etc/systemd/system/multi-user.target.wants/{unit}").exists, unit
    # No web tier: no gunicorn units or colors, no nginx configuration of the app.
    for path in (
        f"/etc/systemd/system/{APP}@.service",
        f"/etc/systemd/system/{APP}@.socket",
        f"/srv/{APP}/live-color",
        f"/etc/nginx/djdeploy/{APP}",
    ):
        assert not db.file(path).exists, path
    assert live_release(DB) == live_release(WEB1) == live_release(WEB2)


def test_a_task_on_the_offload_queue_runs_on_the_worker_only_host():
    """Queued over HTTPS through the balancer (a web host enqueues it), processed by `offload`
    on the db host: the web hosts' workers do not consume that queue."""
    tokens = [f"o-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for token in tokens:
        enqueue(token, queue="offload")
    found = wait_for_runs(tokens, timeout=60)
    for token, runs_of in found.items():
        assert len(runs_of) == 1, (token, runs_of)
        assert runs_of[0].split(":")[0] == "db", runs_of
    # And a task on the default queue still goes to the web hosts' workers.
    token = f"d-{uuid.uuid4().hex[:10]}"
    enqueue(token)
    assert wait_for_runs([token])[token][0].split(":")[0] in ("web1", "web2")


def test_beat_fires_once_per_tick():
    before = len(redis_list("demo:ticks"))
    time.sleep(16)
    ticks = redis_list("demo:ticks")[before:]
    assert len(ticks) >= 2, ticks
    times = [float(t.split()[0]) for t in ticks]
    hosts = {t.split()[1] for t in ticks}
    # One beat: ticks 5 s apart, never two for one slot (two beats would send each twice).
    assert all(b - a > 3.0 for a, b in itertools.pairwise(times)), ticks
    assert hosts <= {"web1", "web2"}, ticks


def switch_with_tasks_queued(playbook: str, *args: str) -> dict[str, list[str]]:
    """Run a release or rollback playbook under HTTP load while tasks are queued the whole
    time; every request answered, then each task's runs."""
    load = Probe(
        f"https://{NAME}/",
        connect=f"{BALANCER['address']}:443",
        cacert=BALANCER["cafile"],
        rate=20,
        max_requests=6000,
        max_seconds=280,
    ).start()
    tokens: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        for _ in range(ENQUEUE_MAX):
            if stop.is_set():
                return
            token = f"r-{uuid.uuid4().hex[:10]}"
            enqueue(token, TASK_SECONDS)
            tokens.append(token)
            time.sleep(ENQUEUE_EVERY)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    run = run_playbook(playbook, *args)
    stop.set()
    thread.join(timeout=60)
    report = load.stop()
    assert run.rc == 0, run.output[-3000:]
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}
    assert len(tokens) > 20, tokens
    return wait_for_runs(tokens, timeout=180)


def exactly_once(found: dict[str, list[str]]) -> None:
    twice_or_never = {t: r for t, r in found.items() if len(r) != 1}
    assert not twice_or_never, twice_or_never


def test_a_rolling_release_under_load_runs_every_task_exactly_once():
    commit_and_push(other(DB), "echo celery >> CHANGES.txt", "celery release", app=APP)
    found = switch_with_tasks_queued("playbooks/release.yml")
    exactly_once(found)
    # Tasks ran on the old and on the new release.
    releases = {r[0].rsplit(":", 1)[1] for r in found.values()}
    assert len(releases) >= 2, releases


def test_a_rollback_under_load_runs_every_task_exactly_once():
    found = switch_with_tasks_queued("playbooks/rollback.yml")
    exactly_once(found)
    releases = {r[0].rsplit(":", 1)[1] for r in found.values()}
    assert len(releases) >= 2, releases
    for name in (WEB1, WEB2):
        assert other(name).service(f"{APP}-worker@1.service").is_running
    # The worker-only host went back too, its offload worker running the release it serves.
    assert live_release(DB) == live_release(WEB1)
    assert other(DB).service(f"{APP}-offload@1.service").is_running
    assert (
        other(DB).file(f"/srv/{APP}/processes").linked_to
        == other(DB).file(f"/srv/{APP}/current").linked_to
    )


def test_the_schedule_runs_on_the_first_app_host_only():
    timer = f"{APP}-tick.timer"
    assert other(WEB1).service(timer).is_enabled
    assert other(WEB1).service(timer).is_running
    assert not other(WEB2).file(f"/etc/systemd/system/{timer}").exists
    started = other(WEB1).run(f"systemctl start {APP}-tick.service")  # oneshot: waits
    assert started.rc == 0, started.stderr
    assert other(WEB1).file(f"/srv/{APP}/shared/media/ticks.txt").exists
    assert not other(WEB2).file(f"/srv/{APP}/shared/media/ticks.txt").exists
