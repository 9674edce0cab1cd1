"""PostgreSQL over TLS in the templates: pg_hba lines of remote hosts and the client's env file.

Rendered with Jinja2 as Ansible's template engine does (trim_blocks), with Ansible's `bool`
and `regex_replace` filters stood in by plain ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[2]
CA = "/etc/ssl/djdeploy/postgres/ca.crt"


def render(path: Path, **values: Any) -> str:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["bool"] = lambda value: value in (True, "true", "True", "yes", 1)
    env.filters["regex_replace"] = lambda value, pattern, new: re.sub(pattern, new, value)
    return env.from_string(path.read_text()).render(ansible_managed="managed", **values)


def hba(tls: bool, hosts: list[str]) -> list[list[str]]:
    text = render(
        ROOT / "roles/postgres/templates/pg_hba-app.conf.j2",
        postgres_db_name="shop",
        postgres_db_user="shop",
        postgres_allowed_hosts=hosts,
        postgres_tls=tls,
    )
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def test_remote_hosts_get_hostssl_lines_only_with_tls() -> None:
    lines = hba(True, ["10.0.0.2/32", "10.0.0.3/32"])
    remote = [
        line for line in lines if line[0] != "local" and not line[3].startswith(("127.", "::1"))
    ]
    assert [line[0] for line in remote] == ["hostssl", "hostssl"]
    assert [line[3] for line in remote] == ["10.0.0.2/32", "10.0.0.3/32"]
    # Local socket and loopback are unchanged.
    assert [line[0] for line in lines[:3]] == ["local", "host", "host"]


def test_without_tls_remote_hosts_keep_plain_host_lines() -> None:
    lines = hba(False, ["10.0.0.2/32"])
    assert [line[0] for line in lines] == ["local", "host", "host", "host"]
    assert all(line[-1] == "scram-sha-256" for line in lines)


def env_file(tls: bool, redis_url: str = "") -> dict[str, str]:
    text = render(
        ROOT / "roles/release/templates/env.j2",
        release_app_name="shop",
        __release_manage="/usr/local/bin/shop-manage",
        release_secret_key="k" * 50,
        release_allowed_hosts=["shop.test"],
        release_media_root="/srv/shop/shared/media",
        release_db_name="shop",
        release_db_user="shop",
        release_db_password="p@ss:word1",
        release_db_host="10.0.0.9",
        release_db_port=5432,
        release_db_tls=tls,
        release_db_ssl_root_cert=CA,
        release_redis_url=redis_url,
        release_env={},
    )
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value.strip("'") for key, value in pairs}


@pytest.mark.parametrize("tls", [True, False])
def test_env_file_makes_libpq_verify_a_remote_server(tls: bool) -> None:
    env = env_file(tls)
    url = urlsplit(env["DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == ("10.0.0.9", 5432, "/shop")
    if tls:
        assert env["PGSSLMODE"] == "verify-full"
        assert env["PGSSLROOTCERT"] == CA
        assert parse_qs(url.query) == {"sslmode": ["verify-full"], "sslrootcert": [CA]}
    else:
        assert "PGSSLMODE" not in env and "PGSSLROOTCERT" not in env
        assert url.query == ""
