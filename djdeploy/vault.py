"""`config`, `config:set` and `config:unset`: the app's settings in the inventory's vault.

The settings live in ``app_config`` (a mapping of environment variables) inside the
environment's ``group_vars/all/vault.yml``, encrypted with ansible-vault; the wiring merges it
over ``app_env``. The file is decrypted in memory only (``ansible-vault view``), the
``app_config`` block is rewritten (the rest of the file, comments included, is kept as it
was), the result is encrypted to a temporary file next to it, decrypted again and compared,
and only then moved over the original: the file on disk is never plain text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from djdeploy.errors import EXIT_INVENTORY, EXIT_USAGE, CliError

# Runs a command with an optional stdin and returns (exit code, stdout, stderr).
Runner = Callable[[Sequence[str], str | None], tuple[int, str, str]]

KEY = "app_config"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER = "$ANSIBLE_VAULT;"


def vault_path(inventory: str) -> Path:
    """The vault file of an inventory (a directory, or its hosts file)."""
    path = Path(inventory)
    base = path if path.is_dir() else path.parent
    return base / "group_vars" / "all" / "vault.yml"


def check_key(key: str) -> str:
    """A valid environment variable name, or a usage error."""
    if not NAME.fullmatch(key):
        raise CliError(
            f"{key!r} is not a valid environment variable name",
            "use letters, digits and underscores, not starting with a digit (e.g. SENTRY_DSN)",
            EXIT_USAGE,
        )
    return key


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE arguments as a dict, or a usage error naming the bad one."""
    if not items:
        raise CliError(
            "config:set needs at least one KEY=VALUE", "e.g. config:set DEBUG=0", EXIT_USAGE
        )
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(
                f"{item!r} has no '=': config:set takes KEY=VALUE",
                f"write {item}=<value> (an empty value is {item}=)",
                EXIT_USAGE,
            )
        check_key(key)
        if "\n" in value or "\r" in value or "'" in value or "\0" in value:
            raise CliError(
                f"the value of {key} contains a newline, a NUL or a single quote",
                "the app's env file cannot carry them; encode the value (e.g. base64)",
                EXIT_USAGE,
            )
        parsed[key] = value
    return parsed


def replace_block(text: str, key: str, value: Mapping[str, str]) -> str:
    """The YAML text with the top-level ``key`` block replaced by ``value`` (appended when
    missing); every other line is kept as it was."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    skipping = False
    for line in lines:
        top_level = bool(line.strip()) and not line[0].isspace() and not line.startswith("#")
        if top_level:
            skipping = line.startswith(f"{key}:")
        if not skipping:
            kept.append(line)
    out = "".join(kept)
    if out and not out.endswith("\n"):
        out += "\n"
    if not out.strip():
        out = "---\n"
    block = yaml.safe_dump({key: dict(sorted(value.items()))}, default_flow_style=False)
    return out + block


class Vault:
    """The vault file of one inventory, read and written with ansible-vault."""

    def __init__(self, inventory: str, run: Runner) -> None:
        self.path = vault_path(inventory)
        self.run = run

    def read_text(self) -> str:
        """The decrypted file ('' when it does not exist yet)."""
        if not self.path.exists():
            return ""
        if not self.path.read_text(errors="replace").startswith(HEADER):
            raise CliError(
                f"{self.path} is not encrypted",
                f"encrypt it first: ansible-vault encrypt {self.path}",
                EXIT_INVENTORY,
            )
        rc, out, err = self.run(["ansible-vault", "view", str(self.path)], None)
        if rc != 0:
            raise CliError(
                f"cannot decrypt {self.path}: {err.strip()}",
                "pass the vault password: --vault-password-file FILE or "
                "ANSIBLE_VAULT_PASSWORD_FILE",
                EXIT_INVENTORY,
            )
        return out

    def config(self) -> dict[str, str]:
        """The app_config mapping in the vault."""
        text = self.read_text()
        data = yaml.safe_load(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise CliError(f"{self.path} is not a YAML mapping", "fix the file", EXIT_INVENTORY)
        config = data.get(KEY) or {}
        if not isinstance(config, dict):
            raise CliError(
                f"{KEY} in {self.path} is not a mapping",
                f"make it KEY: value lines under {KEY}:",
                EXIT_INVENTORY,
            )
        return {str(k): str(v) for k, v in config.items()}

    def write_config(self, config: Mapping[str, str]) -> None:
        """Write app_config back, encrypted; the original is replaced only when the new file
        decrypts to exactly the intended text."""
        text = replace_block(self.read_text(), KEY, config)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.djdeploy-{os.getpid()}")
        try:
            rc, _, err = self.run(["ansible-vault", "encrypt", "--output", str(tmp), "-"], text)
            if rc != 0:
                raise CliError(
                    f"cannot encrypt {self.path}: {err.strip()}",
                    "pass the vault password: --vault-password-file FILE or "
                    "ANSIBLE_VAULT_PASSWORD_FILE",
                    EXIT_INVENTORY,
                )
            if not tmp.read_text().startswith(HEADER):
                raise CliError(
                    f"ansible-vault wrote {tmp} unencrypted", "check ansible-vault", EXIT_INVENTORY
                )
            rc, back, err = self.run(["ansible-vault", "view", str(tmp)], None)
            if rc != 0 or back != text:
                raise CliError(
                    f"the re-encrypted {self.path} does not read back as written: {err.strip()}",
                    "nothing was changed; check the vault password and ansible-vault",
                    EXIT_INVENTORY,
                )
            if self.path.exists():
                tmp.chmod(self.path.stat().st_mode & 0o777)
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
