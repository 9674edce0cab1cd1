"""Where an app lives on a host: every path that more than one role uses, computed in one place.

playbooks/wiring.yml passes these values to the roles (gunicorn, nginx, certbot, release); the
Molecule scenarios that apply a role on its own use the same filter, so no role types a path
that another role must agree on.
"""

from __future__ import annotations

import re
from typing import Any

APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


def djdeploy_layout(app_name: str) -> dict[str, str]:
    """Return the layout of app `app_name` on a host.

    Keys: app_root (the app's tree), env_file (its environment, written by the release role,
    read by the units), media_root (uploads), socket_dir and socket_name (the per-color unix
    sockets; `{color}` stands for blue or green), upstream_file and upstream_name (nginx's
    upstream of the app; nginx writes the file, the release switch rewrites it), certificate and
    certificate_key (where nginx reads TLS files; certbot's hook installs them there) and
    acme_webroot (HTTP-01 challenges: certbot writes, nginx serves; one per host) and backup_dir
    (the database dumps on the db host: the postgres role writes them, the release role records
    where its pre-migrate dump went).
    """
    if not isinstance(app_name, str) or not APP_NAME.match(app_name):
        raise ValueError(
            f"djdeploy_layout: the app name must match {APP_NAME.pattern} (got {app_name!r})"
        )
    root = f"/srv/{app_name}"
    tls = f"/etc/ssl/djdeploy/{app_name}"
    return {
        "app_root": root,
        "env_file": f"{root}/shared/.env",
        "media_root": f"{root}/shared/media",
        "socket_dir": f"/run/{app_name}",
        "socket_name": "gunicorn-{color}.sock",
        "upstream_file": f"/etc/nginx/djdeploy/{app_name}/upstream.conf",
        "upstream_name": f"{app_name}_app",
        "certificate": f"{tls}/fullchain.pem",
        "certificate_key": f"{tls}/privkey.pem",
        "acme_webroot": "/var/www/acme",
        "backup_dir": f"/var/backups/djdeploy/{app_name}",
    }


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {"djdeploy_layout": djdeploy_layout}
