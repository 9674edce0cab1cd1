"""The layout filter (playbooks/filter_plugins/djdeploy_paths.py): one place for shared paths."""

from __future__ import annotations

import pytest

from .loader import load

layout = load("playbooks/filter_plugins/djdeploy_paths.py")


def test_paths_of_an_app() -> None:
    paths = layout.djdeploy_layout("shop")
    assert paths["app_root"] == "/srv/shop"
    assert paths["env_file"] == "/srv/shop/shared/.env"
    assert paths["media_root"] == "/srv/shop/shared/media"
    assert paths["socket_dir"] == "/run/shop"
    assert paths["socket_name"].format(color="green") == "gunicorn-green.sock"
    assert paths["upstream_file"] == "/etc/nginx/djdeploy/shop/upstream.conf"
    assert paths["upstream_name"] == "shop_app"
    assert paths["certificate"] == "/etc/ssl/djdeploy/shop/fullchain.pem"
    assert paths["certificate_key"] == "/etc/ssl/djdeploy/shop/privkey.pem"


def test_two_apps_share_no_path_but_the_acme_webroot() -> None:
    shop, blog = layout.djdeploy_layout("shop"), layout.djdeploy_layout("blog")
    shared = {key for key in shop if shop[key] == blog[key]}
    assert shared == {"acme_webroot", "socket_name"}


@pytest.mark.parametrize("name", ["", "Shop", "../etc", "a b", 3, "x" * 32])
def test_a_bad_app_name_is_refused(name: object) -> None:
    with pytest.raises(ValueError, match="app name"):
        layout.djdeploy_layout(name)


def test_registered_as_a_filter() -> None:
    assert layout.FilterModule().filters()["djdeploy_layout"] is layout.djdeploy_layout
