"""Verify the nginx role as a client and an operator would find the host.

Traffic goes to 127.0.0.1 inside the container with curl --resolve, so SNI and Host carry the
real names. HTTPS is verified against the self-signed certificate itself (--cacert), which
checks the chain and the host name; the SANs are also checked separately with openssl.
"""

import json
import shlex

import pytest

SHOP_NAMES = ["shop.test", "www.shop.test"]
SHOP_CERT = "/etc/ssl/djdeploy/shop/fullchain.pem"
SHOP_KEY = "/etc/ssl/djdeploy/shop/privkey.pem"
BLOG_CERT = "/etc/ssl/djdeploy/blog/fullchain.pem"
# The balancer (app chatlb) terminates TLS for chat.test in front of the backend vhost (app chat).
CHAT_CERT = "/etc/ssl/djdeploy/chatlb/fullchain.pem"
HSTS = "max-age=63072000"
# Mozilla intermediate, TLS 1.2 part, without the DHE suites (no DH parameters).
INTERMEDIATE_CIPHERS = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
]
RESOLVE = [
    f"{name}:{port}:127.0.0.1"
    for name in [*SHOP_NAMES, "blog.test", "chat.test", "unknown.test"]
    for port in (80, 443)
]


class Response:
    def __init__(self, raw: str):
        head, _, self.body = raw.replace("\r\n", "\n").partition("\n\n")
        status_line, *lines = head.split("\n")
        self.version, self.status = status_line.split()[0], int(status_line.split()[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def header(self, name):
        values = self.headers.get(name.lower(), [])
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


def run(host, args):
    return host.run(shlex.join(args))


def curl(host, url, *args, cacert=SHOP_CERT):
    cmd = ["curl", "-sS", "-i", "--max-time", "10", "--cacert", cacert]
    for entry in RESOLVE:
        cmd += ["--resolve", entry]
    result = run(host, [*cmd, *args, url])
    assert result.rc == 0, f"curl {url}: rc={result.rc} {result.stderr}"
    return Response(result.stdout)


def s_client(host, *args, name="shop.test"):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:443", "-servername", name, *args]
    return host.run(shlex.join(cmd) + " </dev/null 2>&1")


def test_nginx_config_valid_and_service_up(host):
    check = host.run("nginx -t")
    assert check.rc == 0, check.stderr
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled


def test_vhosts_enabled_and_default_site_removed(host):
    for app in ("shop", "blog", "chat", "chatlb"):
        link = host.file(f"/etc/nginx/sites-enabled/{app}.conf")
        assert link.is_symlink
        assert link.linked_to == f"/etc/nginx/sites-available/{app}.conf"
    assert not host.file("/etc/nginx/sites-enabled/default").exists


@pytest.mark.parametrize("name", SHOP_NAMES)
def test_http_redirects_to_https_with_308(host, name):
    response = curl(host, f"http://{name}/some/path?q=1")
    assert response.status == 308
    assert response.header("Location") == f"https://{name}/some/path?q=1"


def test_acme_challenge_served_over_http(host):
    response = curl(host, "http://shop.test/.well-known/acme-challenge/molecule-token")
    assert response.status == 200
    assert response.body.strip() == "molecule-token.key"
    assert host.file("/var/www/acme").is_directory
    missing = curl(host, "http://shop.test/.well-known/acme-challenge/nope")
    assert missing.status == 404


def test_certificate_names_every_server_name(host):
    sans = host.check_output(f"openssl x509 -in {SHOP_CERT} -noout -ext subjectAltName")
    for name in SHOP_NAMES:
        assert f"DNS:{name}" in sans
    # The certificate nginx presents is that file.
    served = host.check_output(
        "openssl s_client -connect 127.0.0.1:443 -servername www.shop.test </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    assert served == host.check_output(f"openssl x509 -in {SHOP_CERT} -noout -fingerprint -sha256")


def test_private_keys_are_root_only(host):
    for app in ("shop", "blog"):
        key = host.file(f"/etc/ssl/djdeploy/{app}/privkey.pem")
        assert key.user == "root"
        assert key.group == "root"
        assert key.mode == 0o600
    assert "ASN1 OID: prime256v1" in host.check_output(f"openssl pkey -in {SHOP_KEY} -noout -text")


@pytest.mark.parametrize("name", SHOP_NAMES)
def test_https_proxied_to_the_app_with_forwarded_headers(host, name):
    # A forged X-Forwarded-For from the client must not reach the app.
    response = curl(host, f"https://{name}/hello?x=1", "-H", "X-Forwarded-For: 203.0.113.9")
    assert response.status == 200
    app = response.json()
    assert app["app"] == "shop"
    assert app["path"] == "/hello?x=1"
    headers = app["headers"]
    assert headers["Host"] == name
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Real-IP"] == "127.0.0.1"
    # Exactly one HSTS header, nginx's (the app's own one is hidden).
    assert response.header("Strict-Transport-Security") == HSTS


def test_site_wide_policies_on_the_apps_answers_only(host):
    csp = "default-src 'self'; img-src 'self' data:"
    page = curl(host, "https://shop.test/hello")
    assert page.header("Content-Security-Policy") == csp
    assert page.header("Permissions-Policy") == "camera=(), microphone=()"
    assert page.header("Strict-Transport-Security") == HSTS
    # The other app sets none.
    blog = curl(host, "https://blog.test/hello", cacert=BLOG_CERT)
    assert blog.header("Content-Security-Policy") is None
    assert blog.header("Permissions-Policy") is None


UPGRADE = ["--http1.1", "-H", "Upgrade: websocket", "-H", "Connection: Upgrade"]


@pytest.mark.parametrize("path", ["/ws/chat", "/live/feed"])
def test_websocket_paths_pass_the_upgrade_to_the_app(host, path):
    response = curl(host, f"https://shop.test{path}", *UPGRADE)
    assert response.status == 200
    headers = response.json()["headers"]
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "upgrade"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert response.header("Strict-Transport-Security") == HSTS
    # A plain request on a websocket path is not upgraded.
    plain = curl(host, f"https://shop.test{path}", "--http1.1").json()["headers"]
    assert "Upgrade" not in plain
    assert plain["Connection"] == "close"


def test_a_balancer_passes_websockets_through_the_app_hosts_backend_vhost(host):
    # Client -> balancer (TLS, 443) -> the app host's backend vhost (8081) -> the app's socket.
    response = curl(host, "https://chat.test/ws/echo", *UPGRADE, cacert=CHAT_CERT)
    assert response.status == 200
    assert response.json()["app"] == "chat"
    headers = response.json()["headers"]
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "upgrade"
    assert headers["X-Forwarded-Proto"] == "https"
    assert response.header("Strict-Transport-Security") == HSTS
    # Other paths through the balancer are plain proxied requests.
    other = curl(host, "https://chat.test/chat", *UPGRADE, cacert=CHAT_CERT).json()["headers"]
    assert "Upgrade" not in other


def test_other_paths_do_not_pass_the_upgrade(host):
    headers = curl(host, "https://shop.test/chat", *UPGRADE).json()["headers"]
    assert "Upgrade" not in headers
    assert headers["Connection"] == "close"


def test_websocket_locations_have_the_long_timeout_and_the_map_is_defined_once(host):
    vhost = host.file("/etc/nginx/sites-available/shop.conf").content_string
    assert vhost.count("proxy_read_timeout 3600s;") == 2  # /ws/ and /live/
    assert vhost.count("proxy_read_timeout 60s;") == 1  # everything else
    # Both apps have websockets; the map is host-wide, in one file.
    maps = host.run("grep -rl 'map $http_upgrade' /etc/nginx/").stdout.split()
    assert maps == ["/etc/nginx/conf.d/djdeploy-websocket.conf"]


def test_http2_is_negotiated(host):
    response = curl(host, "https://shop.test/", "--http2")
    assert response.version == "HTTP/2"


def test_hashed_static_file_cached_forever(host):
    response = curl(host, "https://shop.test/static/site.0123456789ab.css")
    assert response.status == 200
    assert response.body == "body { color: #333; }\n"
    assert response.header("Content-Type") == "text/css"
    cache = response.header("Cache-Control")
    assert "immutable" in cache
    assert "max-age=31536000" in cache
    assert response.header("Strict-Transport-Security") == HSTS
    assert response.header("X-Content-Type-Options") == "nosniff"


def test_plain_static_file_short_cache(host):
    response = curl(host, "https://shop.test/static/robots.txt")
    assert response.status == 200
    assert response.body == "User-agent: *\n"
    assert "immutable" not in response.header("Cache-Control")
    assert "max-age=3600" in response.header("Cache-Control")
    assert response.header("Strict-Transport-Security") == HSTS


def test_missing_static_file_is_nginx_404_not_the_app(host):
    response = curl(host, "https://shop.test/static/missing.css")
    assert response.status == 404
    assert '"app"' not in response.body
    assert response.header("Cache-Control") is None
    assert response.header("Strict-Transport-Security") == HSTS


def test_media_file_served_by_nginx(host):
    response = curl(host, "https://shop.test/media/uploads/note.txt")
    assert response.status == 200
    assert response.body == "uploaded by a user\n"
    assert "immutable" not in response.header("Cache-Control")
    assert response.header("Strict-Transport-Security") == HSTS
    assert response.header("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    "url",
    [
        "http://shop.test/",
        "https://shop.test/",
        "https://shop.test/static/robots.txt",
        "https://shop.test/static/missing.css",
    ],
)
def test_server_header_has_no_version(host, url):
    assert curl(host, url).header("Server") == "nginx"


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_modern_tls_versions_accepted(host, version):
    result = s_client(host, version)
    assert result.rc == 0, result.stdout
    expected = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version]
    assert f"New, {expected}, Cipher is" in result.stdout


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_tls_versions_refused_by_the_server(host, version):
    # SECLEVEL=0 lets OpenSSL 3's client offer TLS 1.0/1.1 at all; the refusal must then come
    # from the server as a protocol_version alert (70).
    result = s_client(host, version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.rc != 0
    assert "alert protocol version" in result.stdout, result.stdout


def test_tls_policy_is_included_by_every_tls_server(host):
    # OpenSSL 3 already refuses TLS 1.0/1.1 at its default security level, so the handshake
    # tests above would not notice ssl_protocols widening on its own: check the policy itself.
    snippet = host.file("/etc/nginx/snippets/djdeploy-tls.conf").content_string.splitlines()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in snippet
    assert "ssl_session_tickets off;" in snippet
    ciphers = [line for line in snippet if line.startswith("ssl_ciphers ")]
    assert ciphers == [f"ssl_ciphers {':'.join(INTERMEDIATE_CIPHERS)};"]
    dump = host.check_output("nginx -T 2>/dev/null")
    # shop, blog, the balancer chatlb and the catch-all default server
    assert dump.count("include /etc/nginx/snippets/djdeploy-tls.conf;") == 4


@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256"]
)
def test_non_intermediate_tls12_ciphers_refused(host, cipher):
    result = s_client(host, "-tls1_2", "-cipher", cipher)
    assert result.rc != 0
    assert "alert handshake failure" in result.stdout, result.stdout


def test_no_session_tickets(host):
    result = s_client(host, "-tls1_2")
    assert result.rc == 0
    assert "TLS session ticket:" not in result.stdout


def test_post_quantum_key_exchange_on_debian13(host):
    if host.system_info.release.split(".")[0] != "13":
        pytest.skip("OpenSSL 3.0 (Debian 12) has no ML-KEM")
    result = s_client(host, "-tls1_3", "-groups", "X25519MLKEM768")
    assert result.rc == 0, result.stdout


def test_request_body_limit_per_app(host):
    run(host, ["sh", "-c", "head -c 2000000 /dev/zero > /tmp/body.bin"])
    shop = curl(host, "https://shop.test/upload", "--data-binary", "@/tmp/body.bin")
    assert shop.status == 200
    assert shop.json()["body_bytes"] == 2000000
    blog = curl(
        host, "https://blog.test/upload", "--data-binary", "@/tmp/body.bin", cacert=BLOG_CERT
    )
    assert blog.status == 413


def test_second_app_is_independent(host):
    response = curl(host, "https://blog.test/", cacert=BLOG_CERT)
    assert response.status == 200
    assert response.json()["app"] == "blog"
    assert response.json()["color"] == "blue"
    sans = host.check_output(f"openssl x509 -in {BLOG_CERT} -noout -ext subjectAltName")
    assert "DNS:blog.test" in sans
    assert "shop" not in sans
    # blog serves its static files under /assets/, so /static/ goes to the app.
    assert curl(host, "https://blog.test/static/x.css", cacert=BLOG_CERT).json()["app"] == "blog"


def test_unknown_host_names_get_no_answer(host):
    plain = run(
        host, ["curl", "-sS", "--resolve", "unknown.test:80:127.0.0.1", "http://unknown.test/"]
    )
    assert plain.rc == 52  # empty reply: 444
    tls = run(
        host, ["curl", "-sSk", "--resolve", "unknown.test:443:127.0.0.1", "https://unknown.test/"]
    )
    assert tls.rc == 35  # handshake rejected
    assert "unrecognized name" in tls.stderr


def test_upstream_file_belongs_to_the_release_role(host):
    """converge.yml switched shop to green, then re-ran the role: the switch must survive."""
    upstream = host.file("/etc/nginx/djdeploy/shop/upstream.conf")
    assert upstream.contains("unix:/run/shop/gunicorn-green.sock")
    assert upstream.mode == 0o644
    assert curl(host, "https://shop.test/").json()["color"] == "green"
    # An upstream the release role never touched still has the role's default.
    blog = host.file("/etc/nginx/djdeploy/blog/upstream.conf").content_string
    assert "upstream blog_app {" in blog
    assert "server unix:/run/blog/gunicorn-blue.sock fail_timeout=0;" in blog


def test_app_socket_is_group_www_data(host):
    sock = host.file("/run/shop/gunicorn-green.sock")
    assert sock.is_socket
    assert sock.group == "www-data"
    assert sock.mode == 0o660
