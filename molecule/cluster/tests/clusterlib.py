"""Names and helpers shared by the cluster scenario's test files.

The scenario's containers (molecule/cluster/molecule.yml) are named after their role and the
distro; tests reach any of them through the scenario's Ansible inventory.
"""

from __future__ import annotations

import os
from typing import Any

import testinfra
from testlib import write_file

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
LB, WEB1, WEB2, DB = (f"cluster-{name}-{DISTRO}" for name in ("lb", "web1", "web2", "db"))
WEBS = (WEB1, WEB2)

APP = "demo"
NAME = "demo.test"
DOMAINS = ("demo.test", "www.demo.test")
# The chain nginx serves on the balancer (certbot's deploy hook copies it there).
CHAIN = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
# Pebble (the ACME server, on the db host) and the CA of its API certificate (prepare.yml).
PEBBLE_API_CA = "/etc/pebble/api-ca.pem"
# Pebble's current root (it makes a new one each time it starts), the only CA requests through
# the balancer are verified against: install_pebble_root() puts it here on the balancer and the
# db host before the first test (conftest.py).
ROOT = "/etc/ssl/molecule-pebble-root.pem"


def other(name: str) -> Any:
    """A testinfra host of the scenario by its container name."""
    return testinfra.get_host(
        f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )


def address(name: str) -> str:
    """The container's address on the scenario's network."""
    return other(name).run("hostname -I").stdout.split()[0]


def install_pebble_root() -> str:
    """Fetch Pebble's root from its management API (on the db host's loopback, over HTTPS
    verified against the API CA) and install it at ROOT on the db host and the balancer."""
    db = other(DB)
    fetched = db.run(
        f"curl -sS --fail --max-time 10 --cacert {PEBBLE_API_CA} -o {ROOT} "
        "https://localhost:15000/roots/0"
    )
    assert fetched.rc == 0, f"Pebble's management API: {fetched.stderr}"
    root: str = db.file(ROOT).content_string
    assert "BEGIN CERTIFICATE" in root, root
    written = other(LB).run(write_file(ROOT, root))
    assert written.rc == 0, written.stderr
    return root
