"""Inventories: vault files are encrypted, every environment links the shared defaults."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = sorted(p.parent.name for p in (ROOT / "inventories").glob("*/hosts.yml"))


def test_there_are_environments() -> None:
    assert {"prod", "staging", "local"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("vault", sorted((ROOT / "inventories").rglob("vault.yml")), ids=str)
def test_vault_files_are_encrypted(vault: Path) -> None:
    assert vault.read_text().startswith("$ANSIBLE_VAULT;"), f"{vault} is not encrypted"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_links_the_shared_defaults(env: str) -> None:
    link = ROOT / "inventories" / env / "group_vars" / "all" / "00-shared.yml"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "group_vars" / "all" / "main.yml").resolve()


@pytest.mark.parametrize("env", ["prod", "staging"])
def test_real_environments_keep_secrets_in_the_vault(env: str) -> None:
    plain = (ROOT / "inventories" / env / "group_vars" / "all" / "main.yml").read_text()
    for secret in ("app_secret_key", "app_db_password"):
        assert f"{secret}:" not in plain
