import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT))

from clusterlib import install_pebble_root  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def pebble_root() -> str:
    """Pebble's current root on the balancer and the db host (clusterlib.ROOT), before any test
    requests a page through the balancer."""
    return install_pebble_root()
