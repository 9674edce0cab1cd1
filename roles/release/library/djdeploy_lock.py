#!/usr/bin/python
"""The release role's deploy lock: one release or rollback of an app at a time on a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: djdeploy_lock
short_description: Take, release or inspect the deploy lock of an app on a host
description:
  - One release or rollback of an app at a time per host. The lock is the file
    C(<lock_dir>/<app>.lock) holding the owner as JSON (C(who), C(since) in UTC ISO 8601 with
    C(Z), C(action), C(run), C(token)). It is created atomically (written under a temporary name,
    then hard-linked to its name, which fails when the lock exists), so a reader never sees a
    half-written owner.
  - I(lock_dir) is created owned by the user the module runs as (root) with mode C(0700), and
    refused when it is a symlink, not a directory or owned by someone else. Unlike the
    world-writable C(/run/lock), no other local user can pre-create a lock there to block
    deploys.
  - The token names the run that holds the lock. Taking a lock this token already holds
    succeeds (a run may take it again); a lock held by another token is refused with a message
    naming its holder. Releasing removes the lock only when its token matches (or with
    I(force)); another run's lock is left in place and reported.
  - A lock is reported stale when it was taken before the host booted (the boot time is the
    C(btime) of C(/proc/stat); in a container it is the host kernel's boot), or when it is older
    than I(stale_after) seconds. The age comes from the owner's C(since), or the file's
    modification time when C(since) cannot be read. The default I(lock_dir) is on tmpfs, where a
    reboot removes the lock anyway; the boot-time check covers a I(lock_dir) on persistent
    storage. A stale lock is only named in the message; it is removed only with I(break_lock).
  - The lock is transient (it exists while a run does), so taking and releasing it does not
    count as a change to the host; the module always returns C(changed=false), and a playbook
    that only takes and releases the lock stays idempotent.
options:
  app:
    description: Name of the app; the lock is C(<lock_dir>/<app>.lock).
    type: str
    required: true
  state:
    description:
      - C(acquired) takes the lock, C(released) gives it back, C(inspected) only reads it.
    type: str
    choices: [acquired, released, inspected]
    default: inspected
  token:
    description:
      - The token of this run (the same on every host of the run). Required to take the lock;
        releasing without it removes nothing unless I(force).
    type: str
    default: ""
  who:
    description: Who runs the release, recorded in the owner file.
    type: str
    default: unknown
  action:
    description: What the run does (release, rollback), recorded in the owner file.
    type: str
    default: ""
  run:
    description: Which release the run deploys, recorded in the owner file.
    type: str
    default: ""
  host:
    description: Host name used in messages (pass C(inventory_hostname)); default the node name.
    type: str
  break_lock:
    description:
      - Before taking the lock, remove a lock held by another token (left by a run that died).
    type: bool
    default: false
  force:
    description: Release the lock whatever its token. Nothing in the role uses it.
    type: bool
    default: false
  stale_after:
    description: Also report a lock older than this many seconds as stale.
    type: int
  lock_dir:
    description: Directory of the locks, created root-owned with mode C(0700).
    type: path
    default: /run/djdeploy/locks
attributes:
  check_mode:
    support: full
    description: >-
      Reads the lock only and reports what would happen: C(acquired) or C(released) as they
      would be, or the refusal a held lock would cause.
notes:
  - Always returns C(changed=false) (see the description).
author:
  - djdeploy
"""

EXAMPLES = r"""
- name: Take the deploy lock
  djdeploy_lock:
    app: demo
    state: acquired
    token: "{{ run_token }}"
    who: alice
    action: release
    run: 20260101T000000Z-abcdef12
    host: "{{ inventory_hostname }}"

- name: Release it (only if this run holds it)
  djdeploy_lock:
    app: demo
    state: released
    token: "{{ run_token }}"

- name: Who holds the lock?
  djdeploy_lock:
    app: demo
  register: lock
"""

RETURN = r"""
lock_path:
  description: The lock file.
  returned: always
  type: str
  sample: /run/djdeploy/locks/demo.lock
held:
  description: Whether the lock exists after the call (or would, in check mode).
  returned: always
  type: bool
holder:
  description: The owner of the lock (after the call); empty when nobody holds it.
  returned: always
  type: dict
  sample: {who: alice, since: "2026-01-01T00:00:00Z", action: release, run: x, token: t1}
stale:
  description: Whether the lock found was taken before the boot or is older than stale_after.
  returned: always
  type: bool
stale_reason:
  description: Why the lock found is stale; empty when it is not.
  returned: always
  type: str
acquired:
  description: Whether this token holds the lock (state=acquired).
  returned: when state is acquired
  type: bool
broken_holder:
  description: The owner of the lock that break_lock removed; empty when none was.
  returned: when state is acquired
  type: dict
released:
  description: Whether the lock was removed (state=released).
  returned: when state is released
  type: bool
"""


from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.djdeploy_lock_lib import (  # noqa: E402
    DEFAULT_LOCK_DIR,
    DeployLock,
    Found,
    LockError,
    Owner,
    Result,
    format_since,
    parse_since,
    read_boot_time,
    run,
)

__all__ = [
    "DeployLock",
    "Found",
    "LockError",
    "Owner",
    "Result",
    "format_since",
    "parse_since",
    "read_boot_time",
    "run",
]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "default": "inspected",
                "choices": ["acquired", "released", "inspected"],
            },
            "token": {"type": "str", "default": "", "no_log": False},
            "who": {"type": "str", "default": "unknown"},
            "action": {"type": "str", "default": ""},
            "run": {"type": "str", "default": ""},
            "host": {"type": "str"},
            "break_lock": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "stale_after": {"type": "int"},
            "lock_dir": {"type": "path", "default": DEFAULT_LOCK_DIR},
        },
        required_if=[("state", "acquired", ("token",))],
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except LockError as exc:
        module.fail_json(msg=str(exc), changed=False)
        return
    data = result.as_dict()
    # The lock is transient: taking or releasing it is not a change to the host.
    if result.failed:
        module.fail_json(changed=False, **data)
    module.exit_json(changed=False, **data)


if __name__ == "__main__":
    main()
