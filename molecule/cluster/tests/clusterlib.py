"""Names and helpers shared by the cluster scenario's test files.

The scenario's containers (molecule/cluster/molecule.yml) are named after their role and the
distro; tests reach any of them through the scenario's Ansible inventory.
"""

from __future__ import annotations

import os
from typing import Any

import testinfra

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
LB, WEB1, WEB2, DB = (f"cluster-{name}-{DISTRO}" for name in ("lb", "web1", "web2", "db"))
WEBS = (WEB1, WEB2)

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"


def other(name: str) -> Any:
    """A testinfra host of the scenario by its container name."""
    return testinfra.get_host(
        f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )


def address(name: str) -> str:
    """The container's address on the scenario's network."""
    return other(name).run("hostname -I").stdout.split()[0]
