#!/usr/bin/python3
"""Stand-in for gunicorn in the certbot scenario: answers every request with a small HTML page
and the headers a Django project with the default MIDDLEWARE sends (SecurityMiddleware,
XFrameOptionsMiddleware), so testssl.sh judges nginx in front of what a Django app answers.

systemd owns the unix socket and passes it as fd 3 (socket activation, Accept=no).
"""

import os
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

SD_LISTEN_FDS_START = 3
# What Django's default SecurityMiddleware and XFrameOptionsMiddleware add to every response.
DJANGO_DEFAULT_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
PAGE = b"<!doctype html><html><head><title>demo</title></head><body><p>demo app</p></body></html>\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        for name, value in DJANGO_DEFAULT_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the probe sends hundreds of requests: keep the journal quiet

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
