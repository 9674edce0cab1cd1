"""Exit codes of the CLI and the one error type that carries a cause, a fix and a code."""

from __future__ import annotations

# The documented exit codes (README, `djdeploy --help`). `run` returns the command's own code.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (a playbook failed, a remote command failed)
EXIT_USAGE = 2  # bad input: unknown verb or option, malformed value; nothing ran
EXIT_INVENTORY = 3  # the inventory, a host or the vault cannot be read; nothing changed
EXIT_LOCKED = 4  # another release, rollback or restart holds the deploy lock; nothing changed
EXIT_SSH = 255  # ssh itself failed (as ssh reports it)

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the operation ran and failed (see its output)"),
    (EXIT_USAGE, "bad input (unknown verb, option or malformed value); nothing ran"),
    (EXIT_INVENTORY, "inventory, host or vault unreadable; nothing changed"),
    (EXIT_LOCKED, "the deploy lock is held by another run; nothing changed"),
    (EXIT_SSH, "ssh failed to connect (run, logs)"),
)


class CliError(Exception):
    """A failure the CLI reports as `djdeploy: <cause>` and `fix: <fix>`, exiting with code."""

    def __init__(self, cause: str, fix: str, code: int = EXIT_FAILED) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.code = code
