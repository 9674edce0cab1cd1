"""Documentation shared by the release role's modules (ansible-doc reads it through
extends_documentation_fragment; ansible.cfg's doc_fragment_plugins points here)."""

from __future__ import annotations


class ModuleDocFragment:
    """The lock option's suboptions: djdeploy_layout and djdeploy_switch take the run's deploy
    lock with the same keys as the djdeploy_lock module."""

    DOCUMENTATION = r"""
options:
  lock:
    suboptions:
      app:
        description: The app; the lock is C(<lock_dir>/<app>.lock).
        type: str
        required: true
      token:
        description: This run's token (the same on every host of the run).
        type: str
        required: true
      who:
        description: Who runs the release (recorded in the lock).
        type: str
        default: unknown
      action:
        description: What the run does (recorded in the lock).
        type: str
        default: ""
      run:
        description: What the run deploys (recorded in the lock).
        type: str
        default: ""
      host:
        description: The host's name in messages.
        type: str
      break_lock:
        description: Remove a lock of another run first (left by a run that died).
        type: bool
        default: false
      lock_dir:
        description: The root-only directory of the locks.
        type: path
        default: /run/djdeploy/locks
"""
