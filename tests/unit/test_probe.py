"""tools/probe.py against local HTTP(S) servers on 127.0.0.1 (no containers)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools import probe
from tools.probe import Probe, ProbeTargetError, check_target


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(0.3)
        status = 500 if self.path.startswith("/error") else 200
        body = b"ok" if status == 200 else b"boom"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hosts.append(self.headers.get("Host", ""))  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    hosts: list[str] = []
    server.hosts = hosts  # type: ignore[attr-defined]
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hosts
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[str]]]:
    yield from _serve()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=probe.test", "-addext",
         "subjectAltName=DNS:probe.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, list[str]]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    yield from _serve(context)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_counts_every_request_against_a_healthy_server(http_server: tuple[int, list[str]]) -> None:
    port, _ = http_server
    report = Probe(f"http://127.0.0.1:{port}/", rate=200, max_requests=60, max_seconds=10).run()
    assert report["sent"] == 60
    assert report["failed"] == 0
    assert report["status"] == {"200": 60}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert sum(b["sent"] for b in report["timeline"]) == 60


def test_non_2xx_answers_are_failures(http_server: tuple[int, list[str]]) -> None:
    port, _ = http_server
    report = Probe(f"http://127.0.0.1:{port}/error", rate=200, max_requests=20).run()
    assert report["sent"] == 20
    assert report["failed"] == 20
    assert report["status"] == {"500": 20}
    assert report["first_failure_at_s"] is not None


def test_a_refused_port_is_a_connection_error() -> None:
    report = Probe(f"http://127.0.0.1:{_free_port()}/", rate=100, max_requests=10).run()
    assert report["sent"] == 10
    assert report["failed"] == 10
    assert report["errors"] == {"connection refused": 10}


def test_https_verifies_against_the_ca_and_sends_the_name(
    https_server: tuple[int, list[str]], certificate: tuple[Path, Path]
) -> None:
    port, hosts = https_server
    report = Probe(
        "https://probe.test/",
        connect=f"127.0.0.1:{port}",
        cacert=str(certificate[0]),
        rate=100,
        max_requests=20,
    ).run()
    assert report["failed"] == 0, report
    assert set(hosts) == {"probe.test"}


def test_https_with_an_untrusted_certificate_fails(https_server: tuple[int, list[str]]) -> None:
    port, _ = https_server
    # Verification is on: the system store does not know the self-signed certificate.
    report = Probe(
        "https://probe.test/", connect=f"127.0.0.1:{port}", rate=100, max_requests=5
    ).run()
    assert report["failed"] == 5
    assert all(kind.startswith("tls") for kind in report["errors"])


def test_the_time_bound_stops_the_run(http_server: tuple[int, list[str]]) -> None:
    port, _ = http_server
    began = time.monotonic()
    report = Probe(f"http://127.0.0.1:{port}/", rate=20, max_requests=10_000, max_seconds=1).run()
    assert time.monotonic() - began < 5
    assert 15 <= report["sent"] <= 21


def test_stop_ends_a_background_run(http_server: tuple[int, list[str]]) -> None:
    port, _ = http_server
    running = Probe(f"http://127.0.0.1:{port}/", rate=50, max_requests=10_000).start()
    time.sleep(0.5)
    report = running.stop()
    assert 10 <= report["sent"] <= 40
    assert report["failed"] == 0


def test_slow_requests_do_not_stall_the_schedule(http_server: tuple[int, list[str]]) -> None:
    port, _ = http_server
    report = Probe(
        f"http://127.0.0.1:{port}/slow", rate=40, max_requests=40, max_seconds=10, workers=20
    ).run()
    assert report["sent"] == 40
    # 40 requests of 0.3 s at 40/s take about 1.3 s with parallel senders (12 s serially).
    assert report["duration_s"] < 3
    assert report["latency_ms"]["p50"] >= 300


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "172.18.0.2", "10.1.2.3", "192.168.5.5"])
def test_guard_allows_loopback_and_private_addresses(address: str) -> None:
    assert str(check_target(address)) == address


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "169.254.1.1"])
def test_guard_refuses_other_addresses(address: str) -> None:
    with pytest.raises(ProbeTargetError, match="refusing"):
        check_target(address)


def test_guard_narrows_to_the_allowed_networks() -> None:
    assert str(check_target("172.30.0.5", ["172.30.0.0/24"])) == "172.30.0.5"
    assert str(check_target("127.0.0.1", ["172.30.0.0/24"])) == "127.0.0.1"
    with pytest.raises(ProbeTargetError, match="refusing"):
        check_target("172.31.0.5", ["172.30.0.0/24"])
    with pytest.raises(ProbeTargetError, match="not a private network"):
        check_target("172.30.0.5", ["0.0.0.0/0"])


def test_a_refused_target_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probe connected to a refused target")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(ProbeTargetError):
        Probe("https://example.org/", connect="93.184.215.14:443")


def test_cli_writes_the_json_report(http_server: tuple[int, list[str]], tmp_path: Path) -> None:
    port, _ = http_server
    out = tmp_path / "out.json"
    args = ["--url", f"http://127.0.0.1:{port}/", "--rate", "100", "--max-requests", "15"]
    assert probe.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sent"] == 15 and report["failed"] == 0


def test_cli_refuses_a_public_address() -> None:
    with pytest.raises(SystemExit) as exc:
        probe.main(["--url", "http://8.8.8.8/", "--max-requests", "1"])
    assert exc.value.code == 2
