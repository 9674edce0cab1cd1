"""The firewall between the cluster's hosts: each port only from the hosts that need it.

Connections start inside the scenario's containers (the real sources the rules name); a port
the firewall drops gets no answer at all (timeout), unlike a closed port (refused) or nginx's
deny (403).
"""

from __future__ import annotations

import pytest
from clusterlib import DB, LB, WEB1, WEB2, address, other

testinfra_hosts = [LB]

PROBE = (
    "python3 -c 'import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n"
    '    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")\n'
    "except socket.timeout:\n"
    '    print("timeout")\n'
    "except ConnectionRefusedError:\n"
    '    print("refused")\' {address} {port}'
)


def reach(source: str, target: str, port: int) -> str:
    result = other(source).run(PROBE.format(address=address(target), port=port))
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("source", "target", "port", "expected"),
    [
        # The backend vhost: the balancer only (the db host is dropped, no 403 from nginx).
        (LB, WEB1, 8000, "open"),
        (DB, WEB1, 8000, "timeout"),
        (WEB2, WEB1, 8000, "timeout"),
        # PostgreSQL: the app hosts only.
        (WEB1, DB, 5432, "open"),
        (WEB2, DB, 5432, "open"),
        (LB, DB, 5432, "timeout"),
        # The inventory's extra rule on the db host (git daemon) for the app hosts only.
        (WEB1, DB, 9418, "open"),
        (LB, DB, 9418, "timeout"),
        # Pebble on the db host (the ACME server of the scenario): its ACME API for the balancer's
        # certbot only, its management API for nobody (the tests use it on the db host).
        (LB, DB, 14000, "open"),
        (WEB1, DB, 14000, "timeout"),
        (LB, DB, 15000, "timeout"),
        # TLS terminates on the balancer only; SSH everywhere (no app_admin_networks).
        (DB, LB, 443, "open"),
        (LB, WEB1, 443, "timeout"),
        (LB, DB, 22, "open"),
    ],
)
def test_ports_between_hosts(source, target, port, expected):
    assert reach(source, target, port) == expected


def test_every_host_drops_inbound_by_default():
    for name in (LB, WEB1, WEB2, DB):
        table = other(name).run("/usr/sbin/nft list table inet djdeploy")
        assert table.rc == 0, table.stderr
        assert "policy drop" in table.stdout
