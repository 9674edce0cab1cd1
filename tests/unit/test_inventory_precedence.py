"""The inventory's settings win over the project's shared defaults, from the project root.

group_vars/all/main.yml at the root is the shared defaults file every inventory links as
group_vars/all/00-shared.yml. Read beside a playbook at the root (site.yml, or an ad-hoc call
from the root, as the djdeploy command makes), Ansible would rank it above the inventory's
group_vars/all; ansible.cfg turns that off ([vars_host_group_vars] stage = inventory).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from djdeploy.ansible import json_env, parse_json_run

ROOT = Path(__file__).resolve().parents[2]


def test_an_inventory_value_beats_the_shared_default(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    web1: {ansible_connection: local}\n")
    (inventory / "group_vars" / "all" / "00-shared.yml").symlink_to(
        ROOT / "group_vars" / "all" / "main.yml"
    )
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        "app_name: shop\napp_ref: v9.9.9\napp_processes: {worker: {command: run}}\n"
    )
    ansible = Path(sys.executable).parent / "ansible"
    env = json_env(dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    done = subprocess.run(
        [
            str(ansible),
            "web1",
            "-i",
            str(inventory),
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ {'ref': app_ref, 'processes': app_processes | list,"
            " 'keep': app_keep_releases} }}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    msg = parse_json_run(done.stdout)["plays"][0]["tasks"][0]["hosts"]["web1"]["msg"]
    # The inventory's values, and the shared default for what it does not set.
    assert msg == {"ref": "v9.9.9", "processes": ["worker"], "keep": 5}
