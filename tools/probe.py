"""Load probe: steady HTTP(S) traffic at a fixed rate, bounded in requests and in time.

  python -m tools.probe --url https://demo.test/ --connect 127.0.0.1:8443 --cacert ca.pem \\
      --rate 60 --max-requests 4000 --max-seconds 90 --json out.json

It sends requests on a fixed schedule (open loop: request i is due at start + i / rate), from
a pool of worker threads, so one slow request does not delay the next ones; a request that
starts after its due time is recorded as schedule lag. Every request opens a new connection
(`Connection: close`): no keep-alive state hides or causes failures across a reload. TLS is
verified against --cacert (or the system store); --connect sends the TCP connection to
IP:port while SNI and Host stay the URL's name, like `curl --resolve`.

A request fails on a connection error, a timeout or a status outside 2xx. The report (JSON)
holds requests sent, failed, a status histogram, error kinds, latency percentiles in ms
(p50, p90, p99, max; from the start of the connection to the end of the response) and a
per-second timeline.

Bounds: the probe stops by itself after --max-requests requests or --max-seconds seconds,
whichever comes first (a library caller can also stop it earlier).

Address guard: the probe only loads our own machine and our own containers. The address it
connects to (--connect, or the URL's host) must resolve to loopback, or to a private address
(RFC 1918 / IPv6 ULA, where Docker allocates its networks); `allowed_networks` (--allow-net)
narrows that to given subnets, e.g. the subnet of the bench's own Docker network. Anything
else is refused before a single packet is sent.

Library use (pytest, tools.bench):

    probe = Probe(url, connect="172.18.0.2:443", cacert=ca, rate=60).start()
    ...  # release
    report = probe.stop()
    assert report["failed"] == 0
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import queue
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProbeTargetError(ValueError):
    """The target address is not one the probe may load."""


def resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ProbeTargetError(f"probe: cannot resolve {host!r}: {exc}") from exc
    return sorted({ipaddress.ip_address(str(info[4][0])) for info in infos}, key=str)


def check_target(host: str, allowed_networks: Sequence[str] | None = None) -> IPAddress:
    """The address to connect to, when every address of ``host`` may be loaded.

    Loopback is always allowed. Other addresses must be private (Docker networks) and, when
    ``allowed_networks`` is given, inside one of those subnets (themselves private).
    """
    nets: list[IPNetwork] = []
    for net in allowed_networks or []:
        parsed = ipaddress.ip_network(net, strict=False)
        first, last = parsed[0], parsed[-1]
        if not any(first in p and last in p for p in PRIVATE_NETWORKS):
            raise ProbeTargetError(f"probe: allowed network {net} is not a private network")
        nets.append(parsed)
    addresses = resolve(host)
    for address in addresses:
        if address.is_loopback:
            continue
        private = any(address in p for p in PRIVATE_NETWORKS)
        inside = not nets or any(address in n for n in nets)
        if not (private and inside):
            where = ", ".join(map(str, nets)) if nets else "loopback or private (Docker) networks"
            raise ProbeTargetError(
                f"probe: refusing to load {host} ({address}): only {where} may be loaded"
            )
    return addresses[0]


@dataclass
class _Result:
    due: float  # seconds since the start when the request was scheduled
    lag: float  # seconds the request started after its due time
    latency: float  # seconds from connect to the end of the response
    status: int  # 0 when no response
    error: str  # "" on a response

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 300


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@dataclass
class Probe:
    """Steady traffic to ``url`` in a background thread; see the module docstring."""

    url: str
    connect: str | None = None
    cacert: str | None = None
    rate: float = 50.0
    max_requests: int = 3000
    max_seconds: float = 120.0
    workers: int = 32
    timeout: float = 10.0
    allowed_networks: Sequence[str] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"probe: unsupported URL {self.url!r} (http or https with a host)")
        if not (0 < self.rate <= 1000):
            raise ValueError("probe: rate must be in (0, 1000] requests per second")
        if self.max_requests < 1 or self.max_seconds <= 0:
            raise ValueError("probe: max_requests and max_seconds must be positive")
        self._https = parts.scheme == "https"
        self._name = parts.hostname
        default_port = 443 if self._https else 80
        self._port_in_url = parts.port or default_port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host_header = self._name if parts.port is None else f"{self._name}:{parts.port}"
        if self.connect:
            host, sep, port = self.connect.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"probe: --connect wants IP:PORT, got {self.connect!r}")
            connect_host, connect_port = host, int(port)
        else:
            connect_host, connect_port = self._name, self._port_in_url
        self._address = str(check_target(connect_host, self.allowed_networks))
        self._connect_port = connect_port
        self._context: ssl.SSLContext | None = None
        if self._https:
            self._context = ssl.create_default_context(cafile=self.cacert)
        self._results: list[_Result] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self._started_epoch = 0.0
        self._finished = 0.0
        self._scheduled = 0
        self._runner: threading.Thread | None = None

    # --- one request ---------------------------------------------------------------------
    def _request_once(self) -> int:
        sock = socket.create_connection((self._address, self._connect_port), timeout=self.timeout)
        try:
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._name)
            conn = http.client.HTTPConnection(self._name, self._connect_port, timeout=self.timeout)
            conn.sock = sock
            conn.putrequest("GET", self._path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._host_header)
            conn.putheader("User-Agent", "djdeploy-probe")
            conn.putheader("Connection", "close")
            conn.endheaders()
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status
        finally:
            sock.close()

    def _worker(self, jobs: queue.Queue[float | None]) -> None:
        while True:
            due = jobs.get()
            if due is None:
                return
            begin = time.monotonic()
            status, error = 0, ""
            try:
                status = self._request_once()
            except TimeoutError:
                error = "timeout"
            except ssl.SSLError as exc:
                error = f"tls: {exc.reason or exc.__class__.__name__}"
            except ConnectionRefusedError:
                error = "connection refused"
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                error = exc.__class__.__name__
            end = time.monotonic()
            result = _Result(
                due=due - self._started,
                lag=max(0.0, begin - due),
                latency=end - begin,
                status=status,
                error=error,
            )
            with self._lock:
                self._results.append(result)

    # --- schedule ------------------------------------------------------------------------
    def _run(self) -> None:
        jobs: queue.Queue[float | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._worker, args=(jobs,), daemon=True, name=f"probe-{i}")
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        interval = 1.0 / self.rate
        deadline = self._started + self.max_seconds
        while self._scheduled < self.max_requests and not self.stop_event.is_set():
            due = self._started + self._scheduled * interval
            if due >= deadline:
                break
            delay = due - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            jobs.put(due)
            self._scheduled += 1
        # On a stop, requests queued but not started are dropped (never sent).
        while self.stop_event.is_set():
            try:
                jobs.get_nowait()
                self._scheduled -= 1
            except queue.Empty:
                break
        for _ in self._threads:
            jobs.put(None)
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self._finished = time.monotonic()

    def start(self) -> Probe:
        """Start sending in a background thread; returns self."""
        if self._runner is not None:
            raise RuntimeError("probe: already started")
        self._started = time.monotonic()
        self._started_epoch = time.time()
        self._runner = threading.Thread(target=self._run, daemon=True, name="probe-schedule")
        self._runner.start()
        return self

    @property
    def running(self) -> bool:
        """True while the probe schedules or finishes requests."""
        return self._runner is not None and self._runner.is_alive()

    @property
    def started_at(self) -> float:
        """time.monotonic() when the run started (0 before start)."""
        return self._started

    @property
    def sent(self) -> int:
        """Requests completed so far (answered or failed)."""
        with self._lock:
            return len(self._results)

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(1 for r in self._results if not r.ok)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until a bound (requests, seconds) ends the run; return the report."""
        if self._runner is None:
            raise RuntimeError("probe: not started")
        self._runner.join(timeout)
        if self._runner.is_alive():
            return self.stop()
        return self.report()

    def stop(self) -> dict[str, Any]:
        """Stop scheduling, let requests in flight finish, return the report."""
        self.stop_event.set()
        if self._runner is not None:
            self._runner.join(self.max_seconds + self.timeout + 10)
        return self.report()

    def run(self) -> dict[str, Any]:
        """Blocking run until a bound is reached."""
        return self.start().wait()

    # --- report --------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        with self._lock:
            results = sorted(self._results, key=lambda r: r.due)
        ok = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        latencies = sorted(r.latency for r in results)
        lags = sorted(r.lag for r in results)
        end = self._finished or time.monotonic()
        duration = end - self._started if self._started else 0.0
        statuses = Counter(str(r.status) for r in results if not r.error)
        errors = Counter(r.error for r in results if r.error)
        buckets: dict[int, list[_Result]] = {}
        for r in results:
            buckets.setdefault(int(r.due), []).append(r)
        timeline = [
            {
                "second": second,
                "sent": len(bucket),
                "failed": sum(1 for r in bucket if not r.ok),
                "max_ms": _ms(max(r.latency for r in bucket)),
            }
            for second, bucket in sorted(buckets.items())
        ]
        slowest = max(results, key=lambda r: r.latency, default=None)
        return {
            "url": self.url,
            "connect": f"{self._address}:{self._connect_port}",
            "rate_target": self.rate,
            "rate_achieved": round(len(results) / duration, 2) if duration > 0 else 0.0,
            "duration_s": round(duration, 2),
            "sent": len(results),
            "ok": len(ok),
            "failed": len(failed),
            "failed_pct": round(100 * len(failed) / len(results), 3) if results else 0.0,
            "status": dict(sorted(statuses.items())),
            "errors": dict(sorted(errors.items())),
            "latency_ms": {
                "p50": _ms(_percentile(latencies, 50)),
                "p90": _ms(_percentile(latencies, 90)),
                "p99": _ms(_percentile(latencies, 99)),
                "max": _ms(latencies[-1] if latencies else 0.0),
            },
            "slowest_at_s": round(slowest.due, 2) if slowest else None,
            # The five slowest requests, when they were due (seconds from the start, and as
            # UTC epoch seconds, to line them up with the steps of a switch report).
            "started_epoch": round(self._started_epoch, 3),
            "slowest": [
                {
                    "at_s": round(r.due, 3),
                    "at_epoch": round(self._started_epoch + r.due, 3),
                    "ms": _ms(r.latency),
                    "status": r.status,
                    "error": r.error,
                }
                for r in sorted(results, key=lambda r: r.latency, reverse=True)[:5]
            ],
            "schedule_lag_ms": {
                "p99": _ms(_percentile(lags, 99)),
                "max": _ms(lags[-1] if lags else 0.0),
            },
            "first_failure_at_s": round(failed[0].due, 2) if failed else None,
            "last_failure_at_s": round(failed[-1].due, 2) if failed else None,
            "timeline": timeline,
        }


def summary(report: dict[str, Any]) -> str:
    """One line for humans."""
    lat = report["latency_ms"]
    return (
        f"{report['sent']} sent at {report['rate_achieved']}/s, {report['failed']} failed "
        f"({report['failed_pct']} %), latency ms p50 {lat['p50']} p90 {lat['p90']} "
        f"p99 {lat['p99']} max {lat['max']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.probe",
        description="Steady, bounded HTTP(S) load on loopback or our own containers.",
    )
    parser.add_argument("--url", required=True, help="URL as clients see it (SNI and Host)")
    parser.add_argument("--connect", help="IP:PORT to connect to instead (like curl --resolve)")
    parser.add_argument("--cacert", help="CA file to verify TLS with (default: system store)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--max-requests", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=32, help="concurrent senders")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument(
        "--allow-net", action="append", metavar="CIDR", help="restrict targets to these subnets"
    )
    parser.add_argument("--json", type=Path, help="write the report here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        probe = Probe(
            args.url,
            connect=args.connect,
            cacert=args.cacert,
            rate=args.rate,
            max_requests=args.max_requests,
            max_seconds=args.max_seconds,
            workers=args.workers,
            timeout=args.timeout,
            allowed_networks=args.allow_net,
        )
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    probe.start()
    try:
        report = probe.wait()
    except KeyboardInterrupt:
        report = probe.stop()
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    else:
        print(text)
    print(f"probe: {summary(report)}", file=sys.stderr)
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
