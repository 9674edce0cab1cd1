#!/usr/bin/python3
"""Stand-in for gunicorn in the nginx scenario: answers every request with JSON describing it.

Usage: fakeapp.py <app> <color>. systemd owns the unix socket and passes it as fd 3 (socket
activation, Accept=no), like it does for the real gunicorn instances.
"""

import json
import os
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

APP, COLOR = sys.argv[1], sys.argv[2]
SD_LISTEN_FDS_START = 3


class Handler(BaseHTTPRequestHandler):
    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = len(self.rfile.read(length)) if length else 0
        info = {"app": APP, "color": COLOR, "method": self.command, "path": self.path}
        info |= {"body_bytes": received, "headers": dict(self.headers.items())}
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # Django's SecurityMiddleware may send its own HSTS header: nginx must hide it.
        self.send_header("Strict-Transport-Security", "max-age=1")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer  # noqa: N815  (http.server dispatches on do_<METHOD>)

    def address_string(self) -> str:  # unix socket peers have no address
        return "unix"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__("", Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket.socket(fileno=SD_LISTEN_FDS_START)


if __name__ == "__main__":
    if os.environ.get("LISTEN_FDS") != "1":
        sys.exit("fakeapp: start me through my systemd socket unit (LISTEN_FDS=1)")
    Server().serve_forever()
