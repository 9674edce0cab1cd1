"""HTTP over a unix socket: a gunicorn color's own socket, asked directly (not through nginx).

Used by the switch (the new color's health check before nginx points at it) and by ps (the
live color's health answer).
"""

from __future__ import annotations

import http.client
import socket


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the gunicorn color's own socket, before nginx points at it)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def unix_http_get(socket_path: str, path: str, headers: dict[str, str], timeout: float) -> int:
    """GET path on a unix socket; the status code (redirects are not followed)."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()
