"""The app server filter (playbooks/filter_plugins/djdeploy_app_server.py): wsgi or asgi."""

from __future__ import annotations

import pytest

from .loader import load

plugin = load("playbooks/filter_plugins/djdeploy_app_server.py")

WSGI = "shop.wsgi:application"
ASGI = "shop.asgi:application"
PACKAGES = ["uvicorn-worker", "websockets"]


def test_wsgi_is_todays_gunicorn_without_websockets_or_packages() -> None:
    settings = plugin.djdeploy_app_server("wsgi", WSGI, ASGI, ["/ws/"], PACKAGES)
    assert settings == {"server": "wsgi", "app": WSGI, "websocket_paths": [], "packages": []}


def test_asgi_loads_the_asgi_callable_with_websockets_and_the_worker_packages() -> None:
    settings = plugin.djdeploy_app_server("asgi", WSGI, ASGI, ["/ws/", "/live/"], PACKAGES)
    assert settings == {
        "server": "asgi",
        "app": ASGI,
        "websocket_paths": ["/ws/", "/live/"],
        "packages": PACKAGES,
    }


@pytest.mark.parametrize("server", ["foo", "", "ASGI", None, 1])
def test_an_unknown_app_server_is_refused_naming_the_variable(server: object) -> None:
    errors = plugin.djdeploy_app_server_errors(server, WSGI, ASGI, ["/ws/"], PACKAGES)
    assert errors == [f"app_server must be wsgi or asgi (got {server!r})"]
    with pytest.raises(ValueError, match="app_server must be wsgi or asgi"):
        plugin.djdeploy_app_server(server, WSGI, ASGI, ["/ws/"], PACKAGES)


@pytest.mark.parametrize(
    ("server", "wsgi", "asgi", "knob"),
    [
        ("wsgi", "shop.wsgi", ASGI, "app_wsgi_module"),
        ("asgi", WSGI, "", "app_asgi_module"),
        ("asgi", WSGI, "shop asgi:app", "app_asgi_module"),
    ],
)
def test_the_module_in_use_must_be_a_callable(server: str, wsgi: str, asgi: str, knob: str) -> None:
    errors = plugin.djdeploy_app_server_errors(server, wsgi, asgi, ["/ws/"], PACKAGES)
    assert len(errors) == 1 and errors[0].startswith(f"{knob} must be module:callable")


def test_the_module_not_in_use_is_not_checked() -> None:
    assert plugin.djdeploy_app_server_errors("wsgi", WSGI, "", [], []) == []
    assert plugin.djdeploy_app_server_errors("asgi", "", ASGI, ["/ws/"], PACKAGES) == []


@pytest.mark.parametrize(
    "paths",
    ["/ws/", ["ws/"], ["/ws"], ["/ws/ { }/"], ["/a b/"], ["/ws/;/"], [3], ["/"]],
)
def test_bad_websocket_paths_are_refused(paths: object) -> None:
    errors = plugin.djdeploy_app_server_errors("asgi", WSGI, ASGI, paths, PACKAGES)
    assert len(errors) == 1 and errors[0].startswith("app_websocket_paths must be a list")


def test_a_websocket_path_listed_twice_is_refused() -> None:
    errors = plugin.djdeploy_app_server_errors("asgi", WSGI, ASGI, ["/ws/", "/ws/"], PACKAGES)
    assert errors == ["app_websocket_paths lists a prefix twice (got ['/ws/', '/ws/'])"]


def test_websocket_paths_and_packages_do_not_matter_for_wsgi() -> None:
    assert plugin.djdeploy_app_server_errors("wsgi", WSGI, ASGI, "nonsense", "x") == []


@pytest.mark.parametrize("packages", ["uvicorn-worker", [""], [None]])
def test_bad_asgi_packages_are_refused(packages: object) -> None:
    errors = plugin.djdeploy_app_server_errors("asgi", WSGI, ASGI, ["/ws/"], packages)
    assert len(errors) == 1 and errors[0].startswith("app_asgi_packages must be a list")


def test_registered_as_filters() -> None:
    filters = plugin.FilterModule().filters()
    assert filters["djdeploy_app_server"] is plugin.djdeploy_app_server
    assert filters["djdeploy_app_server_errors"] is plugin.djdeploy_app_server_errors
