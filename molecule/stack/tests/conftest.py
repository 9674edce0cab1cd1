"""The stack's tests: testlib on the path, and which tests run on which distro.

The stack scenario runs on every distro of the matrix. Tests marked ``primary_distro`` (the
CLI's verbs, the migration-safety refusals) exercise logic that runs on the controller and
is the same whatever the host's distro: they run on the primary distro (Debian 12) and are
skipped, with that reason, on the others, to keep ``make test`` within its time budget. The
host-facing behaviour (packages, services, sandboxes, TLS, hardening, backups, the release
engine's switch, processes, websockets, the projects on the distro's Python) runs on every
distro. ``DJDEPLOY_EVERY_TEST=1`` runs everything everywhere.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

PRIMARY_DISTRO = "debian12"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"primary_distro: controller-side logic, tested on {PRIMARY_DISTRO} only"
    )


def pytest_collection_modifyitems(config, items):
    distro = os.environ.get("MOLECULE_DISTRO", PRIMARY_DISTRO)
    if distro == PRIMARY_DISTRO or os.environ.get("DJDEPLOY_EVERY_TEST") == "1":
        return
    reason = f"controller-side logic, tested on {PRIMARY_DISTRO} (DJDEPLOY_EVERY_TEST=1: here too)"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("primary_distro"):
            item.add_marker(skip)
