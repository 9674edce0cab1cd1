#!/usr/bin/python
"""Put an app host into or out of a load balancer's rotation (runs on the balancer)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_rotation
short_description: Mark one backend of a balancer's upstream in or out of rotation
description:
  - The nginx role's balancer vhost includes C(<backends_dir>/*.conf), one file per app host
    holding C(server <address>;) or, out of rotation, C(server <address> down;). This module
    runs on a balancer and writes one host's file, then validates (C(nginx -t)) and reloads
    nginx, so the next step of a rolling release starts only when the host is in or out.
  - Back in (I(state=in)) only after this balancer got 200 from I(check_path) at the host's
    I(address), retried. With I(strict=false) a failed check leaves the file as it is and
    returns C(ok=false) instead of failing (the failure path of a release).
  - When nginx refuses the new file, the old content is put back and the module fails.
options:
  backends_dir:
    description: The balancer's directory of backend files (the nginx role's).
    type: path
    required: true
  name:
    description: The app host's name (its file is C(<backends_dir>/<name>.conf)).
    type: str
    required: true
  address:
    description: The host's backend vhost as the balancer reaches it (C(10.0.0.11:8000)).
    type: str
    required: true
  state:
    description: C(in) or C(out) of the rotation.
    type: str
    choices: [in, out]
    required: true
  check_path:
    description: Path that must answer 200 before the host goes back in.
    type: str
    default: /healthz
  check_host:
    description: Host header of the check (one of the app's server names).
    type: str
    required: true
  retries:
    description: Attempts of the check.
    type: int
    default: 20
  delay:
    description: Seconds between attempts.
    type: float
    default: 1
  strict:
    description: Fail when the check fails (else return C(ok=false)).
    type: bool
    default: true
  check_only:
    description: Only check; never write the file.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Runs the check (a GET) and reports whether the file would change.
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Take web1 out of this balancer's rotation
  djdeploy_rotation:
    backends_dir: /etc/nginx/djdeploy/demo/backends
    name: web1
    address: 10.0.0.11:8000
    state: out
    check_host: demo.example.com
"""

RETURN = r"""
ok:
  description: The host is where it was asked to be (always true for state=out).
  returned: always
  type: bool
status:
  description: The last status the check got (0 when it could not connect; absent for state=out).
  returned: always
  type: int
line:
  description: The line the host's file holds after the call.
  returned: always
  type: str
seconds:
  description: Seconds the call took.
  returned: always
  type: float
"""

import http.client  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# run(argv) -> (rc, stdout, stderr)
Runner = Callable[[list[str]], tuple[int, str, str]]
# http_get(address, path, headers, timeout) -> status; raises OSError when unreachable.
HttpGet = Callable[[str, str, dict[str, str], float], int]


# nginx's own reload, the command nginx.service's ExecReload runs: the master re-reads its
# configuration. `systemctl reload nginx` does the same through systemd's job queue, 0.07-0.08 s
# more a reload on the balancers measured (twice per app host in a rolling release).
NGINX_RELOAD = ["nginx", "-s", "reload"]


def http_get(address: str, path: str, headers: dict[str, str], timeout: float) -> int:
    """GET http://<address><path>; the status code (redirects are not followed)."""
    conn = http.client.HTTPConnection(address, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()


def backend_line(address: str, in_rotation: bool) -> str:
    """The one line of a backend file."""
    return f"server {address}{'' if in_rotation else ' down'};\n"


class RotationError(Exception):
    """The host could not be put where it was asked to be."""


@dataclass
class Rotation:
    """One host's file on one balancer; commands and HTTP are injected."""

    backends_dir: Path
    name: str
    address: str
    check_host: str
    run: Runner
    get: HttpGet = http_get
    sleep: Callable[[float], None] = time.sleep
    check_path: str = "/healthz"
    retries: int = 20
    delay: float = 1.0

    @property
    def path(self) -> Path:
        return self.backends_dir / f"{self.name}.conf"

    def check(self) -> int:
        """GET the host's backend until 200 or out of attempts; the last status (0: no answer)."""
        headers = {"Host": self.check_host, "X-Forwarded-Proto": "https"}
        status = 0
        for attempt in range(max(1, self.retries)):
            if attempt:
                self.sleep(self.delay)
            try:
                status = self.get(self.address, self.check_path, headers, 10.0)
            except OSError:
                status = 0
            if status == 200:
                break
        return status

    def write(self, in_rotation: bool, check_mode: bool = False) -> bool:
        """Write the host's line; validate and reload nginx. Whether the file changed."""
        line = backend_line(self.address, in_rotation)
        try:
            old: str | None = self.path.read_text()
        except FileNotFoundError:
            old = None
        if old == line:
            return False
        if check_mode:
            return True
        self._write(line)
        rc, out, err = self.run(["nginx", "-t", "-q"])
        if rc != 0:
            if old is None:
                self.path.unlink()
            else:
                self._write(old)
            raise RotationError(
                f"nginx refused {self.path} ({(err or out).strip()[:400]}); its old content is back"
            )
        rc, out, err = self.run(NGINX_RELOAD)
        if rc != 0:
            raise RotationError(f"reloading nginx failed: {(err or out).strip()[:400]}")
        return True

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.djdeploy-tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.path)


def apply(
    rotation: Rotation, state: str, strict: bool, check_only: bool, check_mode: bool
) -> dict[str, Any]:
    """Put the host in or out; the module's result (raises RotationError on a strict failure)."""
    status = -1
    ok = True
    if state == "in":
        status = rotation.check()
        ok = status == 200
        if not ok and strict:
            raise RotationError(
                f"the balancer got {status or 'no answer'} from http://{rotation.address}"
                f"{rotation.check_path}; {rotation.name} stays out of its rotation"
            )
    changed = False
    if ok and not check_only:
        changed = rotation.write(state == "in", check_mode)
    try:
        line = rotation.path.read_text().strip()
    except FileNotFoundError:
        line = ""
    return {"changed": changed, "ok": ok, "status": status, "line": line}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "backends_dir": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "address": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["in", "out"], "required": True},
            "check_path": {"type": "str", "default": "/healthz"},
            "check_host": {"type": "str", "required": True},
            "retries": {"type": "int", "default": 20},
            "delay": {"type": "float", "default": 1.0},
            "strict": {"type": "bool", "default": True},
            "check_only": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params

    def run(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return rc, out, err

    rotation = Rotation(
        backends_dir=Path(p["backends_dir"]),
        name=p["name"],
        address=p["address"],
        check_host=p["check_host"],
        run=run,
        check_path=p["check_path"],
        retries=p["retries"],
        delay=p["delay"],
    )
    started = time.monotonic()
    try:
        result = apply(rotation, p["state"], p["strict"], p["check_only"], module.check_mode)
    except (RotationError, OSError) as exc:
        module.fail_json(msg=f"rotation: {exc}", seconds=round(time.monotonic() - started, 3))
    module.exit_json(seconds=round(time.monotonic() - started, 3), **result)


if __name__ == "__main__":
    main()
