"""Real project shapes: a Python requirement the host cannot meet, the app's own deploy check,
a uv project and a Poetry project (lock files decide the versions).

These tests change the demo app's repository and release it, so they run last (file order)
and in order.
"""

import json

import pytest
from testlib import assert_serving as serving
from testlib import (
    commit_and_push,
    live_invocation,
    live_release,
    run_playbook,
    write_file,
)

APP = "demo"
NAME = "demo.test"
SHAPES = "/srv/git/shapes"


def live(host) -> str:
    return live_release(host, APP)


def invocation(host) -> str:
    return live_invocation(host, APP)


def assert_serving(host, release: str) -> None:
    """The release is live, its page and every hashed static file it links come from nginx."""
    serving(host, release, APP, NAME, static=True)


def installed(host, release: str, package: str) -> str:
    """Version of a package in the release's venv ('' when it is not installed)."""
    result = host.run(
        f"{release}/.djdeploy-venv/bin/python -c "
        f"'import importlib.metadata as m; print(m.version(\"{package}\"))'"
    )
    return result.stdout.strip() if result.rc == 0 else ""


def record(host, release: str) -> dict:
    return json.loads(host.file(f"{release}/.djdeploy-release.json").content_string)


def test_python_the_host_cannot_run_is_refused_before_any_change(host):
    before, process = live(host), invocation(host)
    pyproject = '[project]\nname = "demo"\nversion = "1"\nrequires-python = ">=3.99"\n'
    sha = commit_and_push(host, write_file("pyproject.toml", pyproject), "needs python 3.99")
    try:
        run = run_playbook("playbooks/release.yml")
        assert run.rc != 0
        assert "the project requires Python >=3.99 (requires-python in pyproject.toml)" in run.flat
        assert "/usr/bin/python3 on this host is Python 3." in run.flat
        assert "app_python" in run.flat
        assert live(host) == before
        assert invocation(host) == process, "the live instance was restarted"
        built = host.run(f"ls -d /srv/{APP}/releases/*-{sha[:8]} 2>/dev/null").stdout.split()
        assert built == []
    finally:
        commit_and_push(host, "git rm -q pyproject.toml", "back to any python")


def test_a_deploy_warning_that_is_not_accepted_fails_the_build(host):
    """The stack accepts greetings.W001 (every release here passes with it); without it on the
    list, Django's own message fails the build and the live release keeps serving."""
    before = live(host)
    run = run_playbook(
        "playbooks/release.yml",
        "-e",
        '{"app_check_deploy_accept": ["other.W999"], "release_force": true}',
    )
    assert run.rc != 0
    assert "(greetings.W001) No SMTP configuration" in run.flat, run.output[-3000:]
    assert "app_check_deploy_accept" in run.flat
    assert_serving(host, before)


@pytest.mark.parametrize(
    ("shape", "method", "lock", "gunicorn"),
    [
        # The locks pin gunicorn below the newest release that pyproject.toml (>=23) allows.
        ("demo-uv", "uv", "uv.lock", "26.2.0"),
        ("demo-poetry", "poetry", "poetry.lock", "25.3.0"),
    ],
    ids=["uv", "poetry"],
)
def test_locked_project_installs_from_its_lock_and_rolls_back(host, shape, method, lock, gunicorn):
    before = live(host)
    files = "requirements.txt uv.lock poetry.lock pyproject.toml"
    sha = commit_and_push(
        host, f"git rm -q --ignore-unmatch {files} && cp {SHAPES}/{shape}/* .", shape
    )
    run = run_playbook("playbooks/release.yml")
    assert run.rc == 0, run.output[-3000:]
    release = live(host)
    assert release.endswith(sha[:8])
    assert_serving(host, release)
    facts = record(host, release)
    assert (facts["install_method"], facts["install_source"]) == (method, lock)
    assert installed(host, release, "gunicorn") == gunicorn
    # The dev group (pytest) stays out of production.
    assert installed(host, release, "pytest") == ""
    run = run_playbook("playbooks/rollback.yml")
    assert run.rc == 0, run.output[-3000:]
    assert_serving(host, before)
