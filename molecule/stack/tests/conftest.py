"""The stack's tests: testlib on the path, and which tests run on which distro.

The stack scenario runs on every distro of the matrix. Tests marked ``primary_distro`` run on
the primary distro (Debian 12) only and are skipped, with their reason, on the others, to keep
``make test`` within its time budget: the CLI's verbs and the migration-safety refusals
(logic that runs on the controller, the same whatever the host's distro) and the Lynis audit
(90 s; the hardening it rates is the same role on every distro, whose parts are each checked on
every distro by the other hardening tests). The host-facing behaviour (packages, services,
sandboxes, TLS, hardening, backups, the release engine's switch, processes, websockets, the
projects on the distro's Python) runs on every distro. ``DJDEPLOY_EVERY_TEST=1`` runs
everything everywhere.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

PRIMARY_DISTRO = "debian12"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"primary_distro(reason): tested on {PRIMARY_DISTRO} only, for that reason"
    )


def pytest_collection_modifyitems(config, items):
    distro = os.environ.get("MOLECULE_DISTRO", PRIMARY_DISTRO)
    if distro == PRIMARY_DISTRO or os.environ.get("DJDEPLOY_EVERY_TEST") == "1":
        return
    for item in items:
        marker = item.get_closest_marker("primary_distro")
        if marker:
            why = marker.kwargs.get("reason", "")
            reason = f"{why}: tested on {PRIMARY_DISTRO} (DJDEPLOY_EVERY_TEST=1: here too)"
            item.add_marker(pytest.mark.skip(reason=reason))
