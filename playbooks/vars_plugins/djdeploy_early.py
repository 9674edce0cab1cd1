"""Vars plugin djdeploy_early: no variables; the djdeploy_linear strategy's run caches, early.

Ansible loads the project's vars plugins when it first computes variables, before it parses
the playbook; it loads the strategy only when the first play starts. Parsing a playbook
computes the play's variables once for every ``import_role`` and ``import_tasks`` (about 130
times for ``site.yml``), and each time Ansible parses the play's ``vars_files`` again
(``playbooks/wiring.yml``, 4-5 ms a parse): 0.4-0.6 s before the first task of a ``site.yml``
run. Loading this plugin loads the strategy plugin's module, whose import installs its caches
(the vars file cache among them), under the name Ansible's plugin loader gives it: when the
first play starts, the loader finds that module already imported and uses it. It returns no
variables.

Its documentation declares its options (none): Ansible's plugin loader parses a configurable
plugin's ``DOCUMENTATION`` each time it hands the plugin out until the plugin's options are
registered, and it hands vars plugins out once per inventory source and host for every
computation of a host's variables. Documentation without an ``options`` key is never
registered: a multi-host release parsed this one about 600 times (0.2 s of controller CPU).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = r"""
name: djdeploy_early
short_description: Install the djdeploy_linear strategy's caches before the playbook is parsed
description:
  - Returns no variables. Loading it loads C(playbooks/strategy_plugins/djdeploy_linear.py),
    whose import installs the strategy's caches (the vars file cache among them) before
    Ansible parses the playbook.
options: {}
"""

#: The strategy plugin's file, beside this plugin's directory.
STRATEGY = Path(__file__).resolve().parent.parent / "strategy_plugins" / "djdeploy_linear.py"
#: The name Ansible's plugin loader gives the strategy's module (a plugin from a configured
#: directory: ansible.plugins.<type>.<file name>); the loader reuses a module of that name.
MODULE_NAME = "ansible.plugins.strategy.djdeploy_linear"


def load_strategy(path: Path = STRATEGY, name: str = MODULE_NAME) -> Any:
    """The strategy plugin's module, loaded once per process (its import installs its caches)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"djdeploy_early: cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


load_strategy()


class VarsModule(BaseVarsPlugin):  # type: ignore[misc]
    """No variables: loading the module is what this plugin is for."""

    REQUIRES_ENABLED = False

    def get_vars(self, loader: Any, path: str, entities: Any, cache: bool = True) -> dict[str, Any]:
        """No variables."""
        return {}
