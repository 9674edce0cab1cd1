"""djdeploy's command line: one command per operation, thin over the project's playbooks."""

from __future__ import annotations

from pathlib import Path

# The project checkout the CLI belongs to (playbooks/, ansible.cfg, inventories/).
PROJECT = Path(__file__).resolve().parent.parent
