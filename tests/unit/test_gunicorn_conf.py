"""gunicorn.conf.py's hooks: the master's warm-up (when_ready), each worker's (post_worker_init)
and its exit (worker_exit), run on the rendered config with a stand-in WSGI app, server and
worker.

Rendered with Jinja2 as Ansible's template engine does (trim_blocks); Ansible's `to_json` and
`int` filters are stood in by plain ones.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles/gunicorn/templates/gunicorn.conf.py.j2"


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterable[None]:
    """when_ready freezes the objects of the process it runs in: this one, here."""
    yield
    gc.unfreeze()


def config(paths: list[str], server: str = "wsgi") -> dict[str, Any]:
    """The rendered gunicorn.conf.py, executed: its settings and hooks by name."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    env.filters["int"] = int
    text = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="managed",
        gunicorn_workers=3,
        gunicorn_app_server=server,
        gunicorn_asgi_worker_class="uvicorn_worker.UvicornWorker",
        gunicorn_threads=1,
        gunicorn_timeout=30,
        gunicorn_graceful_timeout=20,
        gunicorn_max_requests=0,
        gunicorn_max_requests_jitter=0,
        gunicorn_app_name="shop",
        gunicorn_warmup_paths=paths,
        gunicorn_warmup_host="shop.example",
        gunicorn_extra_settings={},
    )
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    return namespace


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    def warning(self, msg: str, *args: Any) -> None:
        self.lines.append("WARNING " + msg % args)


class App:
    """A WSGI app that records the requests it got (path, host, scheme); fails on /boom."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.seen.append((path, environ["HTTP_HOST"], environ["HTTP_X_FORWARDED_PROTO"]))
        if path == "/boom":
            raise RuntimeError("boom")
        start("200 OK", [])
        return [b"ok"]


class Server:
    def __init__(self, app: App) -> None:
        self.log = Log()
        self.app = self  # gunicorn's server.app is the application object: .wsgi()
        self._app = app

    def wsgi(self) -> App:
        return self._app


class Worker:
    def __init__(self, app: App) -> None:
        self.log = Log()
        self.wsgi = app


def test_the_master_and_each_worker_request_every_path_before_serving() -> None:
    conf = config(["/healthz", "/"])
    app = App()
    server = Server(app)
    conf["when_ready"](server)
    assert app.seen == [("/healthz", "shop.example", "https"), ("/", "shop.example", "https")]
    assert server.log.lines[:2] == [
        "master warm-up: GET /healthz answered ['200 OK']",
        "master warm-up: GET / answered ['200 OK']",
    ]
    assert server.log.lines[2].startswith("gc: froze ")
    worker = Worker(app)
    conf["post_worker_init"](worker)
    assert [seen[0] for seen in app.seen[2:]] == ["/healthz", "/"]
    assert worker.log.lines == [
        "worker warm-up: GET /healthz answered ['200 OK']",
        "worker warm-up: GET / answered ['200 OK']",
    ]


def test_a_failing_path_is_logged_and_the_others_still_run() -> None:
    conf = config(["/boom", "/healthz"])
    app = App()
    worker = Worker(app)
    conf["post_worker_init"](worker)
    assert [seen[0] for seen in app.seen] == ["/boom", "/healthz"]
    assert worker.log.lines == [
        "WARNING worker warm-up: GET /boom failed: RuntimeError('boom')",
        "worker warm-up: GET /healthz answered ['200 OK']",
    ]


def test_an_app_that_cannot_load_leaves_the_process_starting_cold() -> None:
    conf = config(["/healthz"])
    server = Server(App())

    def missing() -> App:
        raise ImportError("no module")

    server.wsgi = missing  # type: ignore[method-assign]
    conf["when_ready"](server)
    assert server.log.lines[0] == (
        "WARNING master warm-up: loading the app failed: ImportError('no module')"
    )
    assert server.log.lines[1].startswith("gc: froze ")


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_without_paths_there_is_no_worker_hook_and_the_master_only_freezes(server: str) -> None:
    conf = config([], server)
    assert "post_worker_init" not in conf
    master = Server(App())
    conf["when_ready"](master)
    assert len(master.log.lines) == 1
    assert master.log.lines[0].startswith("gc: froze ")


class ExitCalledError(Exception):
    """os._exit, stood in."""


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What worker_exit ran: the atexit handlers and os._exit (both stood in)."""
    ran: list[str] = []
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: ran.append("atexit"))

    def _exit(code: int) -> None:
        ran.append(f"_exit({code})")
        raise ExitCalledError

    monkeypatch.setattr(os, "_exit", _exit)
    return ran


def test_a_clean_worker_exit_runs_the_atexit_handlers_then_skips_the_teardown(
    exits: list[str],
) -> None:
    conf = config([])
    # As gunicorn's arbiter calls it: in the `finally` of the worker's sys.exit(0).
    with pytest.raises(ExitCalledError):
        try:
            raise SystemExit(0)
        finally:
            conf["worker_exit"](Server(App()), Worker(App()))
    assert exits == ["atexit", "_exit(0)"]


@pytest.mark.parametrize("code", [3, -1, "boom"])
def test_a_worker_exit_with_an_error_keeps_its_status(code: Any, exits: list[str]) -> None:
    conf = config([])
    with pytest.raises(SystemExit):
        try:
            raise SystemExit(code)
        finally:
            conf["worker_exit"](Server(App()), Worker(App()))
    assert exits == []


def test_a_worker_exit_without_a_system_exit_is_left_alone(exits: list[str]) -> None:
    conf = config([])
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("crash")
        finally:
            conf["worker_exit"](Server(App()), Worker(App()))
    conf["worker_exit"](Server(App()), Worker(App()))
    assert exits == []
