"""Local demo: deploy the demo Django app to systemd containers over SSH (see README)."""

from __future__ import annotations

import sys


def main() -> int:
    print("demo: not yet - the full stack (issue: the whole Django stack on one host) lands next")
    return 1


if __name__ == "__main__":
    sys.exit(main())
