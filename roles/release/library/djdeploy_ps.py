#!/usr/bin/python
"""What the app runs on one host (read-only): `djdeploy ps`."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_ps
short_description: What an app runs on one host (read-only)
description:
  - Reads the live release's record, which color C(<app_root>/live-color) names, the state of
    each color's socket and service, the live color's answer to I(health_path) on its own
    socket, every instance of the app's processes (the units the release switch wrote, found
    by their marker line) with the release C(<app_root>/processes) points at, and each
    schedule's timer with its last and next run.
  - Changes nothing on the host.
options:
  app:
    description: The app's name (its units are C(<app>@<color>) and C(<app>-<name>...)).
    type: str
    required: true
  app_root:
    description: The app's root (C(current), C(live-color), C(processes) below it).
    type: path
    required: true
  record:
    description: Name of the release record inside a release directory.
    type: str
    default: .djdeploy-release.json
  socket_dir:
    description: Directory of the colors' sockets.
    type: path
    required: true
  socket_name:
    description: File name of a color's socket, C({color}) for blue or green.
    type: str
    required: true
  health_path:
    description: Path asked on the live color's socket.
    type: str
    default: /healthz
  health_host:
    description: Host header of that request (one of the app's names).
    type: str
    required: true
  web:
    description:
      - Whether the host serves the web tier. C(false) (a worker-only host) reads no colors and
        asks no health check; the health is C(processes only) and I(web) is empty.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: The module only reads.
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: What demo runs here
  djdeploy_ps:
    app: demo
    app_root: /srv/demo
    socket_dir: /run/demo
    socket_name: gunicorn-{color}.sock
    health_host: demo.example.com
  register: ps
"""

RETURN = r"""
release:
  description: The live release's id (empty when nothing is live).
  returned: always
  type: str
commit:
  description: Its commit.
  returned: always
  type: str
live_color:
  description: The color that serves (empty before the first release).
  returned: always
  type: str
health:
  description:
    - The live color's status code for I(health_path), or why there is none; C(processes only)
      on a worker-only host.
  returned: always
  type: str
web:
  description:
    - Each color (C(color), C(live), C(socket) and C(service) as ActiveState/SubState,
      C(since)).
  returned: always
  type: list
  elements: dict
processes:
  description:
    - Each process instance (C(unit), C(process), C(state), C(restarts), C(since),
      C(release)).
  returned: always
  type: list
  elements: dict
timers:
  description: Each schedule's timer (C(timer), C(schedule), C(state), C(next), C(last)).
  returned: always
  type: list
  elements: dict
lines:
  description: The same as text, one line per unit.
  returned: always
  type: list
  elements: str
"""

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

if TYPE_CHECKING:  # mypy reads roles/release/module_utils as top-level modules
    from djdeploy_http import unix_http_get
    from djdeploy_processes_lib import Settings, Units
    from djdeploy_ps_lib import PsConfig, status
    from djdeploy_record import RecordError, read_live_record
else:  # Ansible ships the role's module_utils with its modules
    from ansible.module_utils.djdeploy_http import unix_http_get
    from ansible.module_utils.djdeploy_processes_lib import Settings, Units
    from ansible.module_utils.djdeploy_ps_lib import PsConfig, status
    from ansible.module_utils.djdeploy_record import RecordError, read_live_record


def run_command(argv: list[str]) -> tuple[int, str, str]:
    """Run a command on the host (no shell) and return its exit code and output."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "app_root": {"type": "path", "required": True},
            "record": {"type": "str", "default": ".djdeploy-release.json"},
            "socket_dir": {"type": "path", "required": True},
            "socket_name": {"type": "str", "required": True},
            "health_path": {"type": "str", "default": "/healthz"},
            "health_host": {"type": "str", "required": True},
            "web": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    root = Path(p["app_root"])
    cfg = PsConfig(
        app=p["app"],
        app_root=root,
        socket_dir=Path(p["socket_dir"]),
        socket_name=p["socket_name"],
        health_path=p["health_path"],
        health_host=p["health_host"],
        web=p["web"],
    )
    units = Units(Settings(app=p["app"], app_root=root, manage="", user="", group=""), run_command)
    try:
        live = read_live_record(root, p["record"])
    except RecordError as exc:
        module.fail_json(msg=str(exc))
    result = status(
        cfg, live, units.owned("process"), units.owned("schedule"), run_command, unix_http_get
    )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
