"""The djdeploy CLI against the stack host, over SSH as the deploy user, as an operator or CI
would run it (python -m djdeploy with the scenario's inventory).

Runs last (file order): config:set releases the live commit with a changed environment.
"""

import base64
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from testlib import (
    PROJECT,
    commit_and_push,
    copied_inventory,
    djdeploy,
    https_from_controller,
    https_get,
    live_invocation,
    live_release,
)

from tools.probe import Probe

# Controller-side logic: runs on the primary distro only (conftest.py).
pytestmark = pytest.mark.primary_distro(reason="controller-side logic")

APP = "demo"
NAME = "demo.test"
# The load probe during restart and config:set: 20 requests a second from the controller.
PROBE_RATE = 20
PROBE_MAX_REQUESTS = 4000
PROBE_MAX_SECONDS = 240
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
# Appended to the demo app in a commit the tests release: the index page says the value of
# DEMO_BANNER from the app's environment in a header.
BANNER_VIEW = """# cli-test banner
import os as _os


def _with_banner(view):
    def wrapped(request):
        response = view(request)
        response["X-Demo-Banner"] = _os.environ.get("DEMO_BANNER", "")
        return response

    return wrapped


index = _with_banner(index)
"""


def as_json(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def last_line(text: str) -> str:
    """What the code printed last (Django's shell prints its auto-imports first)."""
    return text.strip().splitlines()[-1]


def banner(host):
    return https_get(host, NAME, "/", cacert=CERT).headers.get("x-demo-banner")


@pytest.fixture(scope="module")
def web_host():
    """The scenario's one web host, as the CLI names it."""
    data = as_json(djdeploy("releases", "--json"))
    (name,) = data["hosts"]
    return name


def test_releases_lists_the_live_release(host, web_host):
    data = as_json(djdeploy("releases", "--json"))
    live_id = live_release(host, APP).rsplit("/", 1)[-1]
    assert data["live"] == {web_host: live_id}
    listed = [r["id"] for r in data["hosts"][web_host]]
    assert live_id in listed
    text = djdeploy("releases")
    assert text.returncode == 0, text.stderr[-3000:]
    assert f"* {live_id}" in text.stdout
    assert f"live: {web_host} {live_id}" in text.stdout


def test_release_of_a_commit_by_its_sha(host):
    sha = commit_and_push(
        host,
        "sed -i '/^# cli-test banner$/,$d' greetings/views.py && "
        f"echo {base64.b64encode(BANNER_VIEW.encode()).decode()} | base64 -d >> greetings/views.py",
        "banner header from the environment",
    )
    run = djdeploy("release", sha, "--json")
    data = as_json(run)
    assert data["report"]["summary"][0].startswith(f"release of {APP}: ")
    assert live_release(host, APP).endswith(sha[:8])
    assert banner(host) == ""


def test_rollback_to_the_previous_release_and_forward_again(host):
    banner_release = live_release(host, APP)
    previous = host.file(f"/srv/{APP}/previous").linked_to
    data = as_json(djdeploy("rollback", "--json"))
    assert data["report"]["summary"][0].startswith(f"rollback of {APP}: "), data
    assert live_release(host, APP) == previous
    # The previous release has no banner view: no header at all.
    assert banner(host) is None
    run = djdeploy("rollback", banner_release.rsplit("/", 1)[-1])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert live_release(host, APP) == banner_release
    assert banner(host) == ""


def test_run_prints_from_the_live_release_as_the_runtime_user(host):
    release = live_release(host, APP)
    env_file = host.file(f"{release}/.djdeploy.env").content_string
    version = re.search(r"^APP_VERSION=(.*)$", env_file, re.M).group(1).strip("'\"")
    code = (
        "import os, getpass; from django.conf import settings; "
        "print('cli', getpass.getuser(), settings.APP_VERSION, os.environ['DJDEPLOY_RELEASE_DIR'])"
    )
    run = djdeploy("run", "--", "shell", "-c", code)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"cli {APP} {version} /srv/{APP}/current" in run.stdout


def test_run_returns_the_commands_exit_code(host):
    run = djdeploy("run", "--", "shell", "-c", "import sys; print('bye'); sys.exit(7)")
    assert run.returncode == 7, run.stdout + run.stderr[-3000:]
    assert "bye" in run.stdout
    run = djdeploy("run", "--", "no_such_command")
    assert run.returncode == 1
    assert "Unknown command: 'no_such_command'" in run.stderr


def interact(args: list[str], script: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    """Run the CLI on a pseudo-terminal; each time the output shows a prompt of the script
    (in order), type its answer. Bounded: 120 s. Returns the terminal's text and the code."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT), TERM="dumb")
    cmd = [sys.executable, "-m", "djdeploy", "--inventory", os.environ["MOLECULE_INVENTORY_FILE"]]
    main, tty = pty.openpty()
    proc = subprocess.Popen(cmd + args, env=env, stdin=tty, stdout=tty, stderr=tty, cwd="/")
    os.close(tty)
    seen = b""
    answered = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal closed: the session ended
                    break
                if not chunk:
                    break
                seen += chunk
            if answered < len(script) and seen.count(script[answered][0]) > sum(
                1 for prompt, _ in script[:answered] if prompt == script[answered][0]
            ):
                os.write(main, script[answered][1])
                answered += 1
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = seen.decode(errors="replace")
    assert answered == len(script), text[-2000:]
    return text, code


def test_run_interactive_shell_through_a_pseudo_terminal():
    # The printed text appears only when the code runs (the echo shows the source); the
    # shell's stdin is a terminal on the host (ssh -t), not a pipe.
    code_line = b"import os; print('pty-' + 'ok', 6 * 7, os.isatty(0))\nexit()\n"
    text, code = interact(["run", "-i", "--", "shell", "--no-startup"], [(b">>> ", code_line)])
    assert "pty-ok 42 True" in text, text[-2000:]
    assert code == 0, text[-2000:]


def test_createsuperuser_through_run_i_then_log_in_over_https(host):
    user = f"admin{uuid.uuid4().hex[:6]}"
    password = f"Pw-{uuid.uuid4().hex}"
    args = ["run", "-i", "--", "createsuperuser", "--username", user, "--email", f"{user}@x.test"]
    answer = password.encode() + b"\n"
    text, code = interact(args, [(b"Password: ", answer), (b"Password (again): ", answer)])
    assert code == 0, text[-2000:]
    assert "Superuser created successfully." in text, text[-2000:]
    # The admin's login form through nginx over HTTPS, as a browser: CSRF cookie and token.
    jar = f"/tmp/{user}.cookies"
    curl = (
        f"curl -sS --max-time 20 --cacert {CERT} --resolve {NAME}:443:127.0.0.1 -c {jar} -b {jar}"
    )
    form = host.run(f"{curl} https://{NAME}/admin/login/").stdout
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, form[-2000:]
    posted = host.run(
        f"{curl} -o /dev/null -w '%{{http_code}} %{{redirect_url}}'"
        f" -H 'Referer: https://{NAME}/admin/login/'"
        f" --data-urlencode csrfmiddlewaretoken={token.group(1)}"
        f" --data-urlencode username={user} --data-urlencode password={password}"
        f" --data-urlencode next=/admin/ https://{NAME}/admin/login/"
    ).stdout
    host.run(f"rm -f {jar}")
    # A wrong password re-renders the form (200); the right one redirects into the admin.
    assert posted == f"302 https://{NAME}/admin/", posted


def test_logs_show_a_line_the_app_just_wrote(host, web_host):
    marker = f"cli-probe-{uuid.uuid4().hex[:12]}"
    assert https_get(host, NAME, f"/{marker}", cacert=CERT).status == 404
    lines = []
    for _ in range(10):  # journald may take a moment to have the line
        run = djdeploy("logs", "-n", "200", "--since", "5 min ago")
        assert run.returncode == 0, run.stderr[-3000:]
        lines = [line for line in run.stdout.splitlines() if marker in line]
        if lines:
            break
        time.sleep(1)
    assert lines, run.stdout[-3000:]
    assert all(line.startswith(f"{web_host} | ") for line in lines), lines
    data = [json.loads(x) for x in djdeploy("logs", "--json", "-n", "200").stdout.splitlines()]
    assert any(marker in d["line"] and d["host"] == web_host for d in data)


def test_lock_shows_a_held_lock_refuses_a_release_and_breaks_it(host, web_host):
    assert as_json(djdeploy("lock", "--json"))["hosts"][web_host]["held"] is False
    owner = '{"who": "bob", "since": "2026-01-01T00:00:00Z", "action": "release", "run": "y"}'
    lock = f"/run/djdeploy/locks/{APP}.lock"
    held = host.run(f"install -d -m 0700 /run/djdeploy/locks && echo '{owner}' > {lock}")
    assert held.rc == 0
    shown = djdeploy("lock")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert f"{web_host}: held by bob since 2026-01-01T00:00:00Z (release y)" in shown.stdout
    refused = djdeploy("restart")
    assert refused.returncode == 4, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "djdeploy lock --break" in refused.stderr
    assert host.file(lock).exists
    broken = djdeploy("lock", "--break")
    assert broken.returncode == 0, broken.stderr[-3000:]
    assert "; broken now" in broken.stdout
    assert not host.file(lock).exists


@pytest.fixture(scope="module")
def outside(host, tmp_path_factory):
    """The host's address on the scenario's network and its certificate, for requests from
    the controller (as a client would send them, not from the host's loopback)."""
    cafile = tmp_path_factory.mktemp("tls") / "demo.pem"
    cafile.write_text(host.file(CERT).content_string)
    return host.run("hostname -I").stdout.split()[0], str(cafile)


def load_probe(outside) -> Probe:
    """Steady HTTPS requests from the controller, bounded in count and time."""
    address, cafile = outside
    return Probe(
        f"https://{NAME}/",
        connect=f"{address}:443",
        cacert=cafile,
        rate=PROBE_RATE,
        max_requests=PROBE_MAX_REQUESTS,
        max_seconds=PROBE_MAX_SECONDS,
    )


def no_failed_request(report) -> None:
    assert report["sent"] > 20, report
    assert report["failed"] == 0, {k: report[k] for k in ("sent", "failed", "status", "errors")}


def test_restart_switches_colors_on_the_same_release(host, outside):
    release = live_release(host, APP)
    color = host.file(f"/srv/{APP}/live-color").content_string.strip()
    invocation = live_invocation(host, APP)
    load = load_probe(outside).start()
    run = djdeploy("restart")
    report = load.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    no_failed_request(report)
    assert live_release(host, APP) == release
    assert host.file(f"/srv/{APP}/live-color").content_string.strip() != color
    assert live_invocation(host, APP) != invocation
    assert "djdeploy restart: done" in run.stdout
    assert https_get(host, NAME, "/", cacert=CERT).status == 200


def test_backup_writes_a_dump_and_restore_brings_it_back(host):
    files = as_json(djdeploy("backup", "--json"))["files"]
    (path,) = files.values()
    assert re.fullmatch(rf"/var/backups/djdeploy/{APP}/\d{{8}}T\d{{6}}Z-manual\.dump", path), path
    assert host.file(path).exists
    assert host.file(path).user == "postgres"
    # A row written after the dump is gone once the dump is restored.
    marker = f"after-backup-{uuid.uuid4().hex[:8]}"
    model = "from greetings.models import Greeting; "
    count = model + f"print(Greeting.objects.filter(text='{marker}').count())"
    run = djdeploy("run", "--", "shell", "-c", model + f"Greeting.objects.create(text='{marker}')")
    assert run.returncode == 0, run.stderr[-2000:]
    assert last_line(djdeploy("run", "--", "shell", "-c", count).stdout) == "1"
    refused = djdeploy("restore", path.rsplit("/", 1)[-1], "--confirm", "not-the-db")
    assert refused.returncode != 0
    assert last_line(djdeploy("run", "--", "shell", "-c", count).stdout) == "1"
    run = djdeploy("restore", path.rsplit("/", 1)[-1], "--confirm", APP)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert last_line(djdeploy("run", "--", "shell", "-c", count).stdout) == "0"
    assert https_get(host, NAME, "/", cacert=CERT).status == 200


def test_maintenance_mode_answers_503_to_clients_but_not_to_checks_or_loopback(host, outside):
    address, cafile = outside
    assert https_from_controller(address, NAME, "/", cafile)[0] == 200

    run = djdeploy("maintenance", "on")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "maintenance on" in run.stdout
    try:
        status, headers, body = https_from_controller(address, NAME, "/", cafile)
        assert status == 503, body[-500:]
        assert "Down for maintenance" in body
        assert headers["retry-after"] == "600"
        assert headers["strict-transport-security"].startswith("max-age=")
        # The health check (releases, balancers) and loopback (the host's own checks, an
        # operator on the host) still reach the app.
        assert https_from_controller(address, NAME, "/healthz", cafile)[0] == 200
        assert https_get(host, NAME, "/", cacert=CERT).status == 200
    finally:
        off = djdeploy("maintenance", "off", "--json")
    assert as_json(off)["state"] == "off"
    assert https_from_controller(address, NAME, "/", cafile)[0] == 200


@pytest.fixture
def vaulted_inventory(tmp_path):
    """A copy of the scenario's inventory (no links back into the repository) and a vault
    password file; its vault.yml does not exist yet: config:set creates it."""
    inventory = Path(copied_inventory(tmp_path / "inventory"))
    password = tmp_path / "vault-pass"
    password.write_text(f"{uuid.uuid4().hex}\n")
    return inventory, password


def test_config_set_changes_what_the_app_sees_and_the_vault_stays_encrypted(
    host, vaulted_inventory, outside
):
    inventory, password = vaulted_inventory
    vault = inventory.parent / "group_vars" / "all" / "vault.yml"
    release = live_release(host, APP)
    color = host.file(f"/srv/{APP}/live-color").content_string.strip()
    value = f"hello-{uuid.uuid4().hex[:8]}"

    def cli(*args):
        return djdeploy(*args, "--vault-password-file", str(password), inventory=str(inventory))

    load = load_probe(outside).start()
    run = cli("config:set", f"DEMO_BANNER={value}")
    report = load.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    no_failed_request(report)
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert value not in vault.read_text()
    assert banner(host) == value
    # The same release, on the other color: a same-release switch, no build.
    assert live_release(host, APP) == release
    assert host.file(f"/srv/{APP}/live-color").content_string.strip() != color
    assert as_json(cli("config", "--json"))["config"] == {"DEMO_BANNER": value}

    run = cli("config:unset", "DEMO_BANNER")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert vault.read_text().startswith("$ANSIBLE_VAULT;")
    assert banner(host) == ""
    assert live_release(host, APP) == release
