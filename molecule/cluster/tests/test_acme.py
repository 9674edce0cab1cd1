"""site.yml with app_tls_mode: certbot: the balancer's certificate comes from Pebble (db host).

The balancer's certbot registered with Pebble's ACME API (through the db host's firewall, trusting
Pebble's API CA through app_acme_ca_bundle), Pebble validated the app's domains over HTTP-01 on
the balancer's port 80 (the domains are the balancer's network aliases) and the deploy hook put
the chain where nginx reads it. Pebble's root comes from its management API (conftest.py).
"""

from __future__ import annotations

from clusterlib import APP, CHAIN, DB, DOMAINS, LB, NAME, ROOT, other

testinfra_hosts = [LB]

LIVE = f"/etc/letsencrypt/live/{APP}"


def test_the_balancer_serves_pebbles_certificate_for_the_apps_domains(host):
    for name in DOMAINS:
        connect = f"openssl s_client -connect 127.0.0.1:443 -servername {name}"
        handshake = host.run(f"{connect} -CAfile {ROOT} -verify_return_error </dev/null")
        assert handshake.rc == 0, f"{name}: {handshake.stderr}"
        assert "Verify return code: 0 (ok)" in handshake.stdout, handshake.stdout
        leaf = host.run(
            f"{connect} </dev/null 2>/dev/null | openssl x509 -noout -issuer -ext subjectAltName"
        )
        assert leaf.rc == 0, leaf.stderr
        assert "Pebble Intermediate CA" in leaf.stdout, leaf.stdout
        for domain in DOMAINS:
            assert f"DNS:{domain}" in leaf.stdout, leaf.stdout
    # What nginx serves is certbot's current certificate, deployed by its hook.
    assert host.check_output(f"sha256sum < {CHAIN}") == host.check_output(
        f"sha256sum < {LIVE}/fullchain.pem"
    )


def test_a_page_through_the_balancer_verifies_against_pebbles_root():
    # From the db host, by name: Docker's DNS gives the balancer's address, as it did to Pebble.
    db = other(DB)
    url = f"https://{NAME}/"
    page = db.run(f"curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' --cacert {ROOT} {url}")
    assert page.rc == 0, page.stderr
    assert page.stdout == "200"
    # The system's trust store does not know Pebble: the check above is what verified it.
    untrusted = db.run(f"curl -sS --max-time 20 -o /dev/null {url}")
    assert untrusted.rc == 60, (untrusted.rc, untrusted.stderr)
