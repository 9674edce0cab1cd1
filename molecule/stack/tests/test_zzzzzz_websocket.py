"""Websockets of the ASGI demo app (app_server: asgi) through nginx over verified TLS, and what a
release does to them: the open one on the old color is closed after the drain, a reconnect
reaches the new release, and HTTP keeps answering throughout.

The client is the `websockets` package of the app's venv (the release installs it with the
uvicorn worker), run inside the host against its own nginx (127.0.0.1:443, SNI demo.test).
These tests release the demo app, so they run last (file order).
"""

import json
import time

from testlib import commit_and_push, live_release, run_playbook, write_file

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
CLIENT = "/root/djdeploy-ws-client.py"
HOLD_OUT = "/root/djdeploy-ws-hold.json"
LOAD_OUT = "/root/djdeploy-ws-load.txt"
LOAD_STOP = "/root/djdeploy-ws-load.stop"

LOAD_SCRIPT = "/root/djdeploy-ws-load.sh"
# One line per request: "200", or for any other answer the time, curl's exit code, the status
# (000: no HTTP answer at all), the HTTP version and curl's error, to place it in the release.
# HTTP/1.1, a new connection per request, as the cluster's load and `make bench`: over HTTP/2,
# nginx's reload refuses a connection still in its TLS handshake in an old worker (GOAWAY before
# its first request), which browsers retry and curl reports as error 16 (docs/ARCHITECTURE.md,
# Known limits).
LOAD_CODE = f"""i=0
while [ ! -e {LOAD_STOP} ] && [ $i -lt 3000 ]; do
    out=$(curl --http1.1 -sS -o /dev/null -w '%{{http_code}} HTTP/%{{http_version}}' \\
        --max-time 10 \\
        --cacert {CERT} --resolve {NAME}:443:127.0.0.1 https://{NAME}/healthz 2>&1)
    rc=$?
    case "$out" in
        "200 "*) echo 200 ;;
        *) echo "$(date +%T.%N) rc=$rc $out" | tr '\\n' ' '; echo ;;
    esac
    i=$((i + 1))
done
"""

# The client runs on websockets' asyncio implementation: one thread, TLS through memory buffers.
# Its threaded (sync) client reads the socket in a background thread while the main thread
# writes the upgrade request; over TLS 1.3 the server's session tickets arrive right after the
# handshake, and that thread's read of them races the request's write on the same OpenSSL
# object. Once in CI the upgrade request was never sent: the client had sent its TLS Finished
# and nothing more, nginx had read it all, the handshake gave up and its cleanup then waited
# forever for the reader, blocked in SSL read.
CLIENT_CODE = f"""
import asyncio, json, ssl, subprocess, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def where_it_waits():
    # The opening handshake is still waiting after 8 s (its timeout is 10): while the connection
    # is open, show who holds it (nginx's side: Recv-Q unread by nginx; its upstream side: the
    # app's gunicorn socket and its queue of connections not yet accepted) and which nginx and
    # gunicorn processes live. nginx's workers are not dumpable: their sockets show without a
    # process name.
    for cmd in (
        ["ss", "-tnpi", "state", "all", "( sport = :443 or dport = :443 )"],
        ["ss", "-xap"],
        ["ps", "-o", "pid,ppid,etimes,args", "-C", "nginx,gunicorn"],
    ):
        lines = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
        # The load loop's closed connections (TIME-WAIT) would push the live ones out.
        lines = [l for l in lines if not l.startswith("TIME-WAIT")]
        if cmd[1] == "-xap":
            lines = [l for l in lines if "nginx" in l or "gunicorn" in l or "/run/{APP}/" in l]
        out = "\\n".join(" ".join(l.split()) for l in lines)
        print("$ " + " ".join(cmd) + "\\n" + out[-6000:], file=sys.stderr, flush=True)


async def main():
    context = ssl.create_default_context(cafile={CERT!r})
    watchdog = asyncio.get_running_loop().call_later(8, where_it_waits)
    try:
        ws = await connect(
            "wss://{NAME}/ws/echo/", host="127.0.0.1", port=443, ssl=context,
            server_hostname={NAME!r}, open_timeout=10,
        )
    finally:
        watchdog.cancel()
    async with ws:
        result = {{"greeting": await asyncio.wait_for(ws.recv(), 10)}}
        await ws.send("ping through nginx")
        result["echo"] = await asyncio.wait_for(ws.recv(), 10)
        if sys.argv[1] == "hold":
            print(json.dumps(result), flush=True)
            start = time.monotonic()
            try:
                result["unexpected"] = await asyncio.wait_for(ws.recv(), float(sys.argv[2]))
            except TimeoutError:
                result["close"] = "none: still open after the wait"
            except ConnectionClosed as exc:
                result["close"] = exc.rcvd.code if exc.rcvd else "no close frame"
            result["waited"] = round(time.monotonic() - start, 1)
    print(json.dumps(result), flush=True)


asyncio.run(main())
"""


def venv_python(host) -> str:
    """The interpreter of the live release's venv (a fixed path: later releases may move it)."""
    return host.check_output(f"readlink -f /srv/{APP}/current/.djdeploy-venv") + "/bin/python"


def echo(host, python: str) -> dict:
    # Bounded: a server that never answers leaves the client waiting on its close handshake.
    # At the bound, SIGABRT makes faulthandler print every thread's stack (where it waits).
    result = host.run(f"timeout -s ABRT 60 {python} -X faulthandler {CLIENT} echo")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def release_id(release: str) -> str:
    return release.rsplit("/", 1)[-1]


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"waited {seconds} s for {what}")


def test_asgi_app_runs_uvicorn_workers_and_the_wsgi_app_beside_it_does_not(host):
    demo = host.file(f"/etc/djdeploy/{APP}/gunicorn.conf.py").content_string
    assert 'worker_class = "uvicorn_worker.UvicornWorker"' in demo
    assert "threads =" not in demo
    vhost = host.file(f"/etc/nginx/sites-available/{APP}.conf").content_string
    assert "location ^~ /ws/ {" in vhost
    assert "proxy_set_header Connection $djdeploy_connection_upgrade;" in vhost
    # The second app of the stack (test_zz_release_flow) stays on WSGI: sync workers, no
    # websocket location.
    legacy = host.file("/etc/djdeploy/legacy/gunicorn.conf.py").content_string
    assert 'worker_class = "sync"' in legacy
    legacy_vhost = host.file("/etc/nginx/sites-available/legacy.conf").content_string
    assert "location ^~ /ws/" not in legacy_vhost


def test_websocket_echo_through_nginx_over_tls(host):
    host.run_expect([0], write_file(CLIENT, CLIENT_CODE))
    answer = echo(host, venv_python(host))
    assert answer == {
        "greeting": f"hello from {release_id(live_release(host, APP))}",
        "echo": "ping through nginx",
    }


def test_release_closes_the_old_colors_websocket_and_a_reconnect_reaches_the_new_one(host):
    before = live_release(host, APP)
    python = venv_python(host)
    host.run(f"rm -f {HOLD_OUT} {LOAD_OUT} {LOAD_STOP}")
    # A websocket held open across the release (at most 300 s), and HTTP requests in a loop
    # (bounded: until the stop file, at most 3000 requests).
    hold = host.run(
        f"systemd-run --unit=djdeploy-ws-hold --collect -p StandardOutput=file:{HOLD_OUT}"
        f" -p StandardError=journal {python} -X faulthandler {CLIENT} hold 300"
    )
    assert hold.rc == 0, hold.stderr
    host.run_expect([0], write_file(LOAD_SCRIPT, LOAD_CODE))
    load = host.run(
        f"systemd-run --unit=djdeploy-ws-load --collect -p StandardOutput=file:{LOAD_OUT}"
        f" /bin/bash {LOAD_SCRIPT}"
    )
    assert load.rc == 0, load.stderr
    # Longer than the client's own timeouts (connect, open, two receives: 40 s), so that a
    # client that fails says why.
    try:
        opened = wait_for(
            lambda: host.run(f"head -n 1 {HOLD_OUT}").stdout.strip(), 60, "the websocket to open"
        )
    except AssertionError as error:
        # Where the client is stuck (faulthandler's traceback on SIGABRT, in the journal),
        # then no loop left running.
        host.run("systemctl kill -s SIGABRT djdeploy-ws-hold; sleep 1")
        journal = host.run("journalctl -u djdeploy-ws-hold --no-pager -n 300").stdout
        host.run(f"touch {LOAD_STOP}; systemctl stop djdeploy-ws-hold")
        raise AssertionError(f"{error}; the client's journal:\n{journal}") from None
    assert json.loads(opened)["greeting"] == f"hello from {release_id(before)}"

    sha = commit_and_push(host, "echo websocket >> CHANGES.txt", "websocket release")
    try:
        run = run_playbook("playbooks/release.yml")
        assert run.rc == 0, run.output[-3000:]
        after = live_release(host, APP)
        assert after.endswith(sha[:8]) and after != before

        # The websocket on the old color was closed by its server (uvicorn: 1012, service
        # restart) when the old color stopped after the drain; it did not hang.
        closed = wait_for(
            lambda: host.run(f"sed -n 2p {HOLD_OUT}").stdout.strip(), 60, "the websocket to close"
        )
        outcome = json.loads(closed)
        assert outcome["close"] == 1012, outcome
        assert "unexpected" not in outcome, outcome

        # A reconnect reaches the new release.
        answer = echo(host, python)
        assert answer["greeting"] == f"hello from {release_id(after)}"
        assert answer["echo"] == "ping through nginx"
    finally:
        host.run(f"touch {LOAD_STOP}")
        wait_for(
            lambda: host.run("systemctl is-active djdeploy-ws-load").stdout.strip() != "active",
            30,
            "the load loop to stop",
        )
        host.run("systemctl stop djdeploy-ws-hold")
    answers = host.file(LOAD_OUT).content_string.splitlines()
    assert len(answers) > 10, answers
    failed = [answer for answer in answers if answer != "200"]
    if failed:
        # When nginx reloaded and the app's units started and stopped (systemd's and nginx's
        # own messages, not the app's request log), next to the release's report.
        journal = host.run(
            "journalctl -o short-precise --no-pager -t systemd -t nginx --since=-300s"
            f" | grep -E 'nginx|{APP}' | tail -n 80"
        ).stdout
        raise AssertionError(
            f"{len(failed)} of {len(answers)} HTTP requests failed during the release:\n"
            + "\n".join(failed[:20])
            + f"\n--- journal ---\n{journal}\n--- release ---\n{run.output[-4000:]}"
        )
