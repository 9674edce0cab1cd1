"""How the app is served: WSGI (gunicorn's own workers) or ASGI (gunicorn with uvicorn workers).

One place turns the inventory's `app_server`, `app_wsgi_module`, `app_asgi_module`,
`app_websocket_paths` and `app_asgi_packages` into what the roles get (playbooks/wiring.yml):
the gunicorn role's server kind, the nginx role's websocket locations (none for WSGI) and the
packages the release adds to the venv (the uvicorn worker and a websocket library for ASGI).
`djdeploy_app_server_errors` lists what is wrong, naming the inventory variable, so
playbooks/preflight.yml refuses bad input before any change; `djdeploy_app_server` raises
the same messages.
"""

from __future__ import annotations

import re
from typing import Any

SERVERS = ("wsgi", "asgi")
CALLABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
# A URL prefix nginx matches literally (location ^~): no spaces, quotes, braces or semicolons
# that would end the directive.
WEBSOCKET_PATH = re.compile(r"^/([A-Za-z0-9._~-]+/)+$")


def djdeploy_app_server_errors(
    server: Any,
    wsgi_module: Any = "",
    asgi_module: Any = "",
    websocket_paths: Any = None,
    asgi_packages: Any = None,
) -> list[str]:
    """The problems of these settings, one message per problem (empty: all good)."""
    if server not in SERVERS:
        return [f"app_server must be wsgi or asgi (got {server!r})"]
    errors: list[str] = []
    module, knob = (wsgi_module, "app_wsgi_module")
    if server == "asgi":
        module, knob = (asgi_module, "app_asgi_module")
    if not isinstance(module, str) or not CALLABLE.match(module):
        errors.append(
            f"{knob} must be module:callable, e.g. mysite.{server}:application (got {module!r})"
        )
    if server == "asgi":
        paths = websocket_paths if websocket_paths is not None else []
        if not isinstance(paths, list) or not all(
            isinstance(path, str) and WEBSOCKET_PATH.match(path) for path in paths
        ):
            errors.append(
                "app_websocket_paths must be a list of URL prefixes that start and end with"
                f' "/", letters, digits and ._~- between (got {paths!r})'
            )
        elif len(set(paths)) != len(paths):
            errors.append(f"app_websocket_paths lists a prefix twice (got {paths!r})")
        packages = asgi_packages if asgi_packages is not None else []
        if not isinstance(packages, list) or not all(
            isinstance(package, str) and package.strip() for package in packages
        ):
            errors.append(f"app_asgi_packages must be a list of package specs (got {packages!r})")
    return errors


def djdeploy_app_server(
    server: Any,
    wsgi_module: Any = "",
    asgi_module: Any = "",
    websocket_paths: Any = None,
    asgi_packages: Any = None,
) -> dict[str, Any]:
    """What the roles get: server (wsgi or asgi), app (the callable gunicorn loads),
    websocket_paths (the prefixes nginx proxies as websockets: none for WSGI) and packages
    (added to the release's venv: the uvicorn worker and its websocket library for ASGI)."""
    errors = djdeploy_app_server_errors(
        server, wsgi_module, asgi_module, websocket_paths, asgi_packages
    )
    if errors:
        raise ValueError("; ".join(errors))
    if server == "asgi":
        return {
            "server": "asgi",
            "app": asgi_module,
            "websocket_paths": list(websocket_paths or []),
            "packages": list(asgi_packages or []),
        }
    return {"server": "wsgi", "app": wsgi_module, "websocket_paths": [], "packages": []}


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "djdeploy_app_server": djdeploy_app_server,
            "djdeploy_app_server_errors": djdeploy_app_server_errors,
        }
