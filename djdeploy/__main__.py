"""`python -m djdeploy`: the same as the `djdeploy` command."""

from __future__ import annotations

from djdeploy.cli import main

raise SystemExit(main())
