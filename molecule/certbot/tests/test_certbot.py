"""Verify the certbot role against a real ACME server (Pebble) as a client and an operator see it.

HTTPS goes to 127.0.0.1 on the app host with curl --resolve (real names in SNI and Host) and is
verified against the CA Pebble is running with right now (its management API hands out the
root and intermediate, regenerated at every Pebble start): no -k anywhere. testssl.sh runs in
the Pebble container against the app container, on the scenario's own docker network.

The tests run in file order: issuance, renewals (forced and through the distribution's timer
service), domain changes, the failure case, then the TLS rating of the final state.
"""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["app"]

APP = "demo"
DOMAINS = ["demo.test", "www.demo.test"]
EXTRA = "extra.demo.test"  # a network alias of the app container: validates fine
UNREACHABLE = "elsewhere.demo.test"  # resolves, but to the Pebble container (nothing on :80)
CERT = f"/etc/ssl/djdeploy/{APP}/fullchain.pem"
KEY = f"/etc/ssl/djdeploy/{APP}/privkey.pem"
LIVE = f"/etc/letsencrypt/live/{APP}"
RENEWAL_CONF = f"/etc/letsencrypt/renewal/{APP}.conf"
HOOK = f"/etc/letsencrypt/djdeploy/deploy-{APP}.sh"
DIRECTORY = "https://pebble.test:14000/dir"
API_CA = "/etc/ssl/pebble-api-ca.pem"
ROOT = "/tmp/pebble-root.pem"
INTERMEDIATE = "/tmp/pebble-intermediate.pem"
SCENARIO = Path(__file__).resolve().parent.parent

# Findings of testssl.sh rated MEDIUM or worse that come from the test setup only, with the
# exact finding text they are excused for (any other text for the same id still fails).
TESTSSL_EXCUSED = {
    # Pebble puts neither a CRL distribution point nor an OCSP URI into its certificates;
    # Let's Encrypt's certificates carry a CRL URL (OCSP was retired in 2025).
    "cert_revocation": "Neither CRL nor OCSP URI provided",
}
# Protocols, checks and rating: client simulation (-c), the per-protocol cipher list (-E) and
# GREASE (-g) are left out; they take half the run time and do not enter the rating.
TESTSSL_CHECKS = ["-p", "-s", "-f", "-P", "-S", "-h", "-U"]


def run(host, args, **kwargs):
    return host.run(shlex.join(args), **kwargs)


def curl_args(name):
    return [
        "curl", "-sS", "--max-time", "10", "--cacert", ROOT,
        "--resolve", f"{name}:443:127.0.0.1", "--resolve", f"{name}:80:127.0.0.1",
    ]  # fmt: skip


def served_pem(host, name="demo.test"):
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {shlex.quote(name)} </dev/null"
        " 2>/dev/null | openssl x509"
    )
    assert result.rc == 0, f"no certificate served for {name}: {result.stderr}"
    return result.stdout


def served_serial(host, name="demo.test"):
    return host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {shlex.quote(name)} </dev/null"
        " 2>/dev/null | openssl x509 -noout -serial"
    )


def served_names(host, name="demo.test"):
    sans = host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {shlex.quote(name)} </dev/null"
        " 2>/dev/null | openssl x509 -noout -ext subjectAltName"
    )
    return sorted(part.strip()[4:] for part in sans.split("\n", 1)[1].split(","))


def https_status(host, name, path="/"):
    result = run(
        host, [*curl_args(name), "-o", "/dev/null", "-w", "%{http_code}", f"https://{name}{path}"]
    )
    assert result.rc == 0, f"https://{name}{path}: curl rc={result.rc} {result.stderr}"
    return int(result.stdout)


def apply_playbook(domains):
    """Run the nginx and certbot roles again (apply.yml) with another domain list."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "run through molecule verify (MOLECULE_INVENTORY_FILE is not set)"
    playbook = Path(sys.executable).parent / "ansible-playbook"
    cmd = [
        str(playbook), "-i", inventory, str(SCENARIO / "apply.yml"),
        "-e", json.dumps({"molecule_domains": domains}),
    ]  # fmt: skip
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=env, cwd=SCENARIO, check=False
    )


def recap_changed(output):
    line = next(line for line in output.splitlines() if line.startswith("certbot-"))
    return int(line.split("changed=")[1].split()[0])


def task_status(output, task):
    """The result word (ok, changed, skipping, failed) of the first host line after a task."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"TASK [{task}"))
    for line in lines[start + 1 :]:
        word = line.split(":", 1)[0]
        if word in ("ok", "changed", "skipping", "failed", "fatal"):
            return word
    return "missing"


@pytest.fixture(scope="module")
def pebble_ca(host):
    """Pebble's current root and intermediate, fetched from its management API over HTTPS
    (verified against the API CA made in prepare) and stored on the app host."""
    for url, dest in (("roots/0", ROOT), ("intermediates/0", INTERMEDIATE)):
        result = run(
            host,
            ["curl", "-sS", "--fail", "--max-time", "10", "--cacert", API_CA, "-o", dest,
             f"https://pebble.test:15000/{url}"],
        )  # fmt: skip
        assert result.rc == 0, f"Pebble management API {url}: {result.stderr}"
    return host.file(ROOT).content_string


@pytest.fixture(scope="module")
def pebble():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_hosts(["ansible://acme"], ansible_inventory=inventory)[0]


def test_certificate_issued_by_pebble_and_https_verifies(host, pebble_ca):
    # The chain nginx serves ends in Pebble's current root (not the bootstrap self-signed one).
    served = served_pem(host)
    host.run(f"cat > /tmp/served.pem <<'EOF'\n{served}EOF")
    check = host.run(f"openssl verify -CAfile {ROOT} -untrusted {INTERMEDIATE} /tmp/served.pem")
    assert check.rc == 0, check.stdout + check.stderr
    issuer = host.check_output("openssl x509 -in /tmp/served.pem -noout -issuer")
    assert "Pebble Intermediate CA" in issuer
    assert served_serial(host) == host.check_output(
        f"openssl x509 -in {LIVE}/cert.pem -noout -serial"
    )
    assert served_names(host) == sorted(DOMAINS)
    for name in DOMAINS:
        assert https_status(host, name) == 200


def test_nginx_reads_a_copy_with_a_root_only_key(host):
    key = host.file(KEY)
    assert key.user == "root"
    assert key.group == "root"
    assert key.mode == 0o600
    assert host.check_output(f"sha256sum < {CERT}") == host.check_output(
        f"sha256sum < {LIVE}/fullchain.pem"
    )
    assert host.check_output(f"sha256sum < {KEY}") == host.check_output(
        f"sha256sum < {LIVE}/privkey.pem"
    )
    assert "ASN1 OID: prime256v1" in host.check_output(f"openssl pkey -in {KEY} -noout -text")
    # nginx itself is not pointed at /etc/letsencrypt: its configuration never changes.
    vhost = host.file(f"/etc/nginx/sites-available/{APP}.conf").content_string
    assert f"ssl_certificate {CERT};" in vhost
    assert "letsencrypt" not in vhost


def test_renewal_configuration_uses_webroot_and_the_deploy_hook(host):
    conf = host.file(RENEWAL_CONF).content_string.splitlines()
    assert f"renew_hook = {HOOK}" in conf
    assert "authenticator = webroot" in conf
    # The webroot map names every domain (given whole on certbot's command line).
    assert "[[webroot_map]]" in conf
    for domain in DOMAINS:
        assert f"{domain} = /var/www/acme" in conf
    assert f"server = {DIRECTORY}" in conf
    assert "key_type = ecdsa" in conf
    hook = host.file(HOOK)
    assert hook.user == "root"
    assert hook.mode == 0o755
    # Not in renewal-hooks/deploy/: those scripts would run for every certificate of the host.
    assert host.run("ls /etc/letsencrypt/renewal-hooks/deploy/ 2>/dev/null").stdout.strip() == ""


def test_distribution_timer_renews(host):
    timer = host.service("certbot.timer")
    assert timer.is_enabled
    assert timer.is_running
    unit = host.check_output("systemctl show certbot.service -p ExecStart --value")
    assert "certbot -q renew" in unit
    # Renewals reach the private ACME server with its CA bundle (the role's drop-in).
    env = host.check_output("systemctl show certbot.service -p Environment --value")
    assert f"REQUESTS_CA_BUNDLE={API_CA}" in env


PROBE = r"""
end=$(( $(date +%s) + 30 )); n=0; bad=0
while [ "$n" -lt 300 ] && [ "$(date +%s)" -lt "$end" ] && [ ! -e /tmp/probe.stop ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert ROOT \
        --resolve demo.test:443:127.0.0.1 https://demo.test/) || true
    n=$((n + 1))
    [ "$code" = 200 ] || { bad=$((bad + 1)); echo "failed: $code"; }
    sleep 0.05
done
[ -e /tmp/probe.stop ] && why=stop-file || why=limit
echo "done requests=$n failed=$bad ended=$why"
""".replace("ROOT", ROOT)


def start_probe(host):
    host.run("rm -f /tmp/probe.stop /tmp/probe.log")
    host.run(f"cat > /tmp/probe.sh <<'EOF'\n{PROBE}\nEOF")
    started = host.run("setsid nohup timeout 40 sh /tmp/probe.sh >/tmp/probe.log 2>&1 </dev/null &")
    assert started.rc == 0, started.stderr
    time.sleep(1)


def stop_probe(host):
    host.run("touch /tmp/probe.stop")
    for _ in range(45):
        log = host.run("cat /tmp/probe.log").stdout
        if "done requests=" in log:
            summary = log.strip().splitlines()[-1]
            fields = dict(item.split("=") for item in summary.split()[1:])
            return int(fields["requests"]), int(fields["failed"]), fields["ended"], log
        time.sleep(1)
    pytest.fail("the probe did not finish within 45 s")


def test_forced_renewal_swaps_the_certificate_without_failed_requests(host, pebble_ca):
    before = served_serial(host)
    start_probe(host)
    renew = host.run(
        f"REQUESTS_CA_BUNDLE={API_CA} certbot renew --force-renewal --cert-name {APP}"
        " --no-random-sleep-on-renew"
    )
    time.sleep(1)
    requests, failed, ended, log = stop_probe(host)
    assert renew.rc == 0, renew.stdout + renew.stderr
    after = served_serial(host)
    assert after != before, "nginx still serves the old certificate after the renewal"
    assert after == host.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -serial")
    # The probe ran before, during and after the renewal (stopped by us, not by its limits).
    assert ended == "stop-file", log
    assert requests >= 10, log
    assert failed == 0, log
    assert https_status(host, "demo.test") == 200


def test_timer_service_renews_a_due_certificate(host, pebble_ca):
    """What certbot.timer starts (certbot.service, with the role's CA drop-in) renews and deploys
    a certificate that is due: 'renew_before_expiry = 100 days' makes the 90-day one due."""
    before = served_serial(host)
    host.run(
        f"sed -i 's/^# renew_before_expiry = .*/renew_before_expiry = 100 days/' {RENEWAL_CONF}"
    )
    try:
        assert host.file(RENEWAL_CONF).contains("^renew_before_expiry = 100 days")
        service = host.run("systemctl start certbot.service")
        assert service.rc == 0, host.run("journalctl -u certbot.service -n 30 --no-pager").stdout
    finally:
        host.run(
            f"sed -i 's/^renew_before_expiry = .*/# renew_before_expiry = 30 days/' {RENEWAL_CONF}"
        )
    after = served_serial(host)
    assert after != before, "certbot.service did not renew and deploy the due certificate"
    assert https_status(host, "www.demo.test") == 200


def test_unreachable_domain_fails_with_a_hint_and_keeps_the_certificate(host, pebble_ca):
    before = served_serial(host)
    broken = apply_playbook([*DOMAINS, UNREACHABLE])
    output = broken.stdout + broken.stderr
    report = output[output.find("certbot says:") :][:3000]
    assert broken.returncode != 0, output[-3000:]
    # certbot's ACME error for the domain, then the role's hint.
    assert f"Domain: {UNREACHABLE}" in output, report
    assert "connection refused" in output.lower(), report
    assert "What to check: every domain must resolve (DNS A/AAAA records) to this host" in output
    assert "nginx keeps serving the previous certificate" in output
    # ... and it does.
    assert served_serial(host) == before
    assert served_names(host) == sorted(DOMAINS)
    assert https_status(host, "demo.test") == 200


def test_adding_a_domain_reissues_and_removing_it_too(host, pebble_ca):
    added = apply_playbook([*DOMAINS, EXTRA])
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-2000:]
    assert served_names(host, EXTRA) == sorted([*DOMAINS, EXTRA])
    assert https_status(host, EXTRA) == 200
    removed = apply_playbook(DOMAINS)
    assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr[-2000:]
    assert served_names(host) == sorted(DOMAINS)
    assert https_status(host, "demo.test") == 200
    # The state after a re-issue is stable: the next run changes nothing.
    again = apply_playbook(DOMAINS)
    assert again.returncode == 0, again.stdout[-3000:]
    why = [line for line in again.stdout.splitlines() if "is issued because" in line]
    assert recap_changed(again.stdout) == 0, why or again.stdout[-3000:]


def test_lost_nginx_files_are_bootstrapped_then_replaced(host, pebble_ca):
    """Without files at nginx's paths the nginx role bootstraps a self-signed pair (nginx must
    start), and the certbot role puts certbot's current certificate back through the hook."""
    live = host.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -serial")
    host.run(f"rm -f {CERT} {KEY}")
    healed = apply_playbook(DOMAINS)
    assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr[-2000:]
    assert (
        task_status(healed.stdout, "nginx : TLS | Issue the self-signed certificate") == "changed"
    )
    assert (
        task_status(healed.stdout, "certbot : Deploy | Install the certificate for nginx")
        == "changed"
    )
    assert (
        task_status(healed.stdout, "certbot : Certificate | Obtain the certificate") == "skipping"
    )
    assert served_serial(host) == live
    assert host.file(KEY).mode == 0o600
    assert https_status(host, "demo.test") == 200


def test_app_responses_are_not_compressed(host, pebble_ca):
    # BREACH: nginx compresses no proxied response over TLS, whatever the client accepts.
    headers = run(
        host, [*curl_args("demo.test"), "-o", "/dev/null", "-D", "-", "-H",
               "Accept-Encoding: gzip, deflate, br", "https://demo.test/"],
    ).stdout.lower()  # fmt: skip
    assert "content-type: text/html" in headers
    assert "content-encoding" not in headers


def test_testssl_rating(host, pebble, capsys):
    root = pebble.run(
        "curl -sS --fail --max-time 10 --cacert /etc/pebble/api-ca.pem"
        f" -o {ROOT} https://localhost:15000/roots/0"
    )
    assert root.rc == 0, root.stderr
    address = host.check_output("hostname -I").split()[0]
    cmd = [
        "timeout", "300", "testssl", "--quiet", "--color", "0", "--warnings", "off",
        *TESTSSL_CHECKS, "--add-ca", ROOT, "--overwrite", "--jsonfile", "/tmp/testssl.json",
        "--ip", address, "--nodns", "none", "https://demo.test/",
    ]  # fmt: skip
    started = time.monotonic()
    result = run(pebble, cmd)
    seconds = time.monotonic() - started
    assert pebble.file("/tmp/testssl.json").exists, result.stdout[-3000:] + result.stderr
    findings = json.loads(pebble.file("/tmp/testssl.json").content_string)
    by_id = {finding["id"]: finding for finding in findings}
    grade = by_id.get("overall_grade", {}).get("finding", "none")
    with capsys.disabled():
        print(
            f"\n    testssl.sh overall grade: {grade} ({seconds:.0f} s, {' '.join(TESTSSL_CHECKS)})"
        )
    bad = [
        f"{f['id']} {f['severity']}: {f['finding']}"
        for f in findings
        if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")
        and TESTSSL_EXCUSED.get(f["id"]) != f["finding"]
    ]
    assert not bad, "testssl.sh findings rated MEDIUM or worse:\n" + "\n".join(bad)
    for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[protocol]["finding"].startswith("not offered"), by_id[protocol]
    assert by_id["TLS1_2"]["finding"] == "offered"
    assert by_id["TLS1_3"]["finding"].startswith("offered")
    assert by_id["cert_chain_of_trust"]["finding"].startswith("passed"), by_id[
        "cert_chain_of_trust"
    ]
    assert grade == "A+"
