"""The demo app deployed by site.yml, seen as a browser and an operator would see it."""

import re

import pytest
from testlib import hashed_static_urls, https_get

APP = "demo"
NAME = "demo.test"
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"


def get(host, path="/", **kw):
    return https_get(host, NAME, path, cacert=CERT, **kw)


@pytest.fixture(scope="module")
def color(host):
    return host.file(f"/srv/{APP}/live-color").content_string.strip()


def test_home_page_reads_from_postgres_over_https(host):
    page = get(host)
    assert page.status == 200
    assert "Hello from PostgreSQL" in page.body
    assert page.headers["strict-transport-security"].startswith("max-age=")


def test_http_redirects_to_https(host):
    page = https_get(host, NAME, "/some/path?q=1", scheme="http")
    assert page.status == 308
    assert page.headers["location"] == f"https://{NAME}/some/path?q=1"


def test_hashed_static_file_comes_from_nginx_with_cache_headers(host, color):
    page = get(host)
    urls = hashed_static_urls(page.body)
    assert urls, "the page links no hashed static file"
    static = get(host, urls[0])
    assert static.status == 200
    assert "immutable" in static.headers["cache-control"]
    assert "max-age=31536000" in static.headers["cache-control"]
    # gunicorn logs every request it serves: the static file never reached it.
    log = host.run(f"journalctl --no-pager -u {APP}@{color}.service").stdout
    assert "GET / " in log or "GET / HTTP" in log, (
        "the access log of gunicorn is not where expected"
    )
    assert urls[0] not in log


def test_the_live_color_warmed_itself_before_its_workers_forked(host, color):
    # The when_ready hook of gunicorn.conf.py (gunicorn_warmup_paths: app_warmup_paths, the
    # health path by default) ran one request in the master; the workers then fork with the
    # URLconf already imported.
    log = host.run(f"journalctl --no-pager -o cat -u {APP}@{color}.service").stdout
    assert "master warm-up: GET /healthz answered ['200 OK']" in log
    # Then it froze its objects (gc.freeze): the workers' collections leave those pages shared.
    assert re.search(r"gc: froze [1-9][0-9]* objects of the master", log), log[-2000:]


def test_each_worker_of_the_live_color_warmed_itself_before_accepting(host, color):
    # The post_worker_init hook: every worker running now requested the health path once, in
    # its own process, before it took a connection (gunicorn's log lines carry the worker's PID).
    main = host.run(f"systemctl show -p MainPID --value {APP}@{color}.service").stdout.strip()
    workers = host.run(f"pgrep -P {main}").stdout.split()
    assert workers, f"no worker under gunicorn's master {main}"
    log = host.run(f"journalctl --no-pager -o cat -u {APP}@{color}.service").stdout
    for pid in workers:
        assert f"[{pid}] [INFO] worker warm-up: GET /healthz answered ['200 OK']" in log, (
            pid,
            log[-2000:],
        )


def test_live_instance_is_socket_activated_and_runs_as_runtime_user(host, color):
    assert color in {"blue", "green"}
    socket = host.service(f"{APP}@{color}.socket")
    assert socket.is_running and socket.is_enabled
    assert host.socket(f"unix:///run/{APP}/gunicorn-{color}.sock").is_listening
    pid = host.run(f"systemctl show -p MainPID --value {APP}@{color}.service").stdout.strip()
    assert pid != "0"
    assert host.run(f"ps -o user= -p {pid}").stdout.strip() == APP
    other = "green" if color == "blue" else "blue"
    assert not host.service(f"{APP}@{other}.service").is_running


def test_runtime_user_cannot_write_the_release(host):
    release = host.file(f"/srv/{APP}/current").linked_to
    assert release.startswith(f"/srv/{APP}/releases/")
    assert host.run(f"runuser -u {APP} -- test -r {release}/manage.py").rc == 0
    for target in (release, f"{release}/manage.py", f"{release}/.djdeploy-venv/bin"):
        probe = f"{target}/probe" if host.file(target).is_directory else target
        result = host.run(f"runuser -u {APP} -- sh -c 'echo x >> {probe}'")
        assert result.rc != 0, f"{APP} can write {target}"
    assert host.file(release).user == "deploy"


def test_build_user_is_unprivileged_and_cannot_write_a_built_release(host):
    """The build ran the app's and its dependencies' code as <app>-build: no login, no sudo,
    the runtime group only. What it wrote belongs to the deploy user now."""
    build = f"{APP}-build"
    user = host.user(build)
    assert user.shell == "/usr/sbin/nologin"
    assert sorted(user.groups) == sorted([build, APP])
    assert host.run(f"runuser -u {build} -- sudo -n true").rc != 0
    owned = host.run(f"find /srv/{APP}/releases /srv/{APP}/venvs /srv/{APP}/static -user {build}")
    assert owned.rc == 0 and owned.stdout.strip() == "", owned.stdout[:500]
    release = host.file(f"/srv/{APP}/current").linked_to
    venv = host.file(f"{release}/.djdeploy-venv").linked_to
    for target in (f"{release}/manage.py", f"{venv}/bin/gunicorn"):
        result = host.run(f"runuser -u {build} -- sh -c 'echo x >> {target}'")
        assert result.rc != 0, f"{build} can write {target}"
    assert host.run(f"runuser -u {build} -- mkdir /srv/{APP}/releases/probe").rc != 0
    # It reads the app's own settings and secrets (collectstatic imports the settings).
    assert host.run(f"runuser -u {build} -- test -r /srv/{APP}/shared/.env").rc == 0
    assert host.run(f"runuser -u {build} -- test -r {release}/manage.py").rc == 0
    cache = host.file(f"/srv/{APP}/shared/build-cache")
    assert (cache.user, cache.mode) == (build, 0o700)
    assert host.file(f"/srv/{APP}/shared/cache").mode == 0o700  # the mirror: deploy only


def test_env_file_mode_and_owner(host):
    env = host.file(f"/srv/{APP}/shared/.env")
    assert env.user == "deploy"
    assert env.group == APP
    assert env.mode == 0o640
    assert host.run(f"runuser -u www-data -- cat /srv/{APP}/shared/.env").rc != 0


def test_postgres_refuses_a_wrong_password(host):
    result = host.run(
        f"PGPASSWORD=wrong-password psql -h 127.0.0.1 -U {APP} -d {APP} -c 'select 1'"
    )
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_app_role_is_not_superuser(host):
    result = host.run(
        "runuser -u postgres -- psql -tAc "
        f"\"select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = '{APP}'\""
    )
    assert result.stdout.strip() == "f|f|f"


def test_check_deploy_is_clean_in_the_deployed_release(host):
    """The only finding is the app's own warning that the inventory accepts (greetings.W001):
    none of Django's security checks."""
    result = host.run(f"runuser -u {APP} -- /usr/local/bin/{APP}-manage check --deploy")
    output = result.stdout + result.stderr
    assert result.rc == 0, output
    assert "(greetings.W001)" in output
    assert "System check identified 1 issue (0 silenced)" in output, output


def test_release_record(host):
    release = host.file(f"/srv/{APP}/current").linked_to
    record = host.file(f"{release}/.djdeploy-release.json").content_string
    assert re.search(r'"commit": "[0-9a-f]{40}"', record)


def test_service_sandbox_exposure(host, color):
    out = host.run(f"systemd-analyze security --no-pager {APP}@{color}.service").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= 2.0, out


def test_project_static_directory_is_the_apps_and_its_assets_are_served(host):
    """A top-level static/ in STATICFILES_DIRS stays the app's; our link has its own name."""
    release = host.file(f"/srv/{APP}/current").linked_to
    own = host.file(f"{release}/static")
    assert own.is_directory and not own.is_symlink
    assert host.file(f"{release}/static/site/brand.css").exists
    assert host.file(f"{release}/.djdeploy-static").linked_to.startswith(f"/srv/{APP}/static/")
    urls = [u for u in hashed_static_urls(get(host).body) if u.startswith("/static/site/brand.")]
    assert urls, "the page links no hashed site-wide asset"
    asset = get(host, urls[0])
    assert asset.status == 200
    assert "--brand" in asset.body
