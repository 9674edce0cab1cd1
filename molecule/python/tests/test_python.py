"""Verify the python role as a release (and an operator) would find the host."""

import json

import pytest

PKI = "/root/molecule-pki"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_DIR = "/usr/local/share/ca-certificates/djdeploy"
EXPECTED_PYTHON = {"12": "3.11", "13": "3.13"}

# Compiles and links against the headers and libraries of every build dependency, the way a
# wheel without a binary build for this platform does (psycopg2, Pillow, cffi, cryptography).
C_PROBE = r"""
#include <Python.h>
#include <stdio.h>
#include <jpeglib.h>
#include <libpq-fe.h>
#include <zlib.h>
#include <ffi.h>
#include <openssl/ssl.h>
int main(void) {
    struct jpeg_error_mgr err;
    jpeg_std_error(&err);
    printf("pq=%d zlib=%s ffi=%u ssl=%u\n", PQlibVersion(), zlibVersion(),
           (unsigned)ffi_type_pointer.size, (unsigned)OPENSSL_version_major());
    return 0;
}
"""

# A private package index over TLS, served inside the host with a leaf certificate: a wheel
# built on the fly (djdeploy-probe 1.0) and its PEP 503 page. Usage: serve.py CERT KEY PORT.
INDEX_SERVER = r"""
import base64, functools, hashlib, http.server, os, ssl, sys, zipfile

root = os.path.dirname(os.path.abspath(__file__))
name = "djdeploy_probe-1.0-py3-none-any.whl"
info = "djdeploy_probe-1.0.dist-info"
files = {
    "djdeploy_probe/__init__.py": "VERSION = '1.0'\n",
    f"{info}/METADATA": "Metadata-Version: 2.1\nName: djdeploy-probe\nVersion: 1.0\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: molecule\nRoot-Is-Purelib: true\n"
    "Tag: py3-none-any\n",
}
record = []
for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
    record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
os.makedirs(f"{root}/files", exist_ok=True)
os.makedirs(f"{root}/simple/djdeploy-probe", exist_ok=True)
with zipfile.ZipFile(f"{root}/files/{name}", "w") as wheel:
    for path, text in files.items():
        wheel.writestr(path, text)
with open(f"{root}/simple/djdeploy-probe/index.html", "w") as page:
    page.write(f'<html><body><a href="../../files/{name}">{name}</a></body></html>\n')
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""


def run_ok(host, command):
    result = host.run(command)
    assert result.rc == 0, f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def test_python_version_matches_the_distribution(host):
    version_id = run_ok(host, ". /etc/os-release && echo $VERSION_ID").strip()
    version = run_ok(
        host, "/usr/bin/python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
    )
    assert version.strip() == EXPECTED_PYTHON[version_id]


def test_published_facts(host):
    facts = json.loads(host.file("/root/molecule-python-facts.json").content_string)
    assert facts["python_interpreter"] == "/usr/bin/python3"
    real = run_ok(host, "/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    assert facts["python_version"] == real.strip()
    assert facts["python_pip_cert_path"] == BUNDLE


@pytest.mark.parametrize(
    "package",
    [
        "python3-venv",
        "python3-dev",
        "build-essential",
        "libpq-dev",
        "libjpeg-dev",
        "zlib1g-dev",
        "libffi-dev",
        "libssl-dev",
        "pkgconf",
    ],
)
def test_packages_installed(host, package):
    assert host.package(package).is_installed


def test_build_dependencies_compile_and_link(host):
    assert host.file("/usr/include/postgresql/libpq-fe.h").is_file
    assert host.file("/usr/include/jpeglib.h").is_file
    run_ok(host, f"mkdir -p /tmp/cprobe && cat > /tmp/cprobe/probe.c <<'EOF'\n{C_PROBE}\nEOF")
    out = run_ok(
        host,
        "cd /tmp/cprobe && gcc $(python3-config --includes) -I/usr/include/postgresql "
        "probe.c -o probe -lpq -ljpeg -lz -lffi -lssl -lcrypto && ./probe",
    )
    assert out.startswith("pq=")


def test_pip_conf(host):
    conf = host.file("/etc/pip.conf")
    assert conf.user == "root"
    assert conf.group == "root"
    assert conf.mode == 0o644
    assert conf.contains("^# Ansible managed")
    assert conf.contains("^index-url = https://pypi.org/simple$")
    assert conf.contains("^timeout = 30$")
    assert conf.contains(f"^cert = {BUNDLE}$")
    assert conf.contains("^    pypi.internal.example$")


def fingerprint(host, path):
    return run_ok(host, f"openssl x509 -noout -fingerprint -sha256 -in {path}").strip()


def test_extra_ca_files_one_certificate_each(host):
    """ca1 and ca2 (one bundle file) and ca4 (a string) became one file each, nothing else."""
    ca_dir = host.file(CA_DIR)
    assert ca_dir.is_directory
    assert ca_dir.mode == 0o755
    found = {}
    for name in host.run(f"ls {CA_DIR}").stdout.split():
        assert name.startswith("djdeploy-")
        assert name.endswith(".crt")
        path = f"{CA_DIR}/{name}"
        assert host.file(path).mode == 0o644
        assert host.file(path).content_string.count("BEGIN CERTIFICATE") == 1
        # update-ca-certificates linked it into the system store.
        assert host.file(f"/etc/ssl/certs/{name[:-4]}.pem").is_symlink
        found[fingerprint(host, path)] = name
    expected = {fingerprint(host, f"{PKI}/{ca}.crt") for ca in ("ca1", "ca2", "ca4")}
    assert set(found) == expected


@pytest.mark.parametrize("leaf", ["leaf1", "leaf2", "leaf4"])
def test_system_bundle_trusts_the_extra_cas(host, leaf):
    """The bundle pip reads (no CApath fallback) and the hashed links (CApath) both trust them."""
    out = run_ok(host, f"openssl verify -no-CApath -no-CAstore -CAfile {BUNDLE} {PKI}/{leaf}.crt")
    assert out.strip().endswith(": OK")
    out = run_ok(
        host, f"openssl verify -no-CAfile -no-CAstore -CApath /etc/ssl/certs {PKI}/{leaf}.crt"
    )
    assert out.strip().endswith(": OK")


def test_untrusted_ca_is_refused(host):
    """Negative control: a leaf from a CA the role was not given does not verify."""
    result = host.run(f"openssl verify -no-CApath -no-CAstore -CAfile {BUNDLE} {PKI}/leaf3.crt")
    assert result.rc != 0


def test_venv_and_pip_install_as_unprivileged_user(host):
    """What a release does: a venv as a non-root user, then a real install from the index.

    Behind a TLS-inspecting proxy this needs the proxy's CA in the host's store: the test
    images carry the controller's CAs (tools/images.py), a server gets it from this role."""
    script = (
        "set -e; d=$(mktemp -d); "
        '/usr/bin/python3 -m venv "$d/v"; '
        '"$d/v/bin/pip" --version; '
        '"$d/v/bin/pip" config list; '
        '"$d/v/bin/pip" install --no-cache-dir --disable-pip-version-check --no-deps six==1.16.0; '
        '"$d/v/bin/python" -c "import six; print(\\"six\\", six.__version__)"; '
        'rm -rf "$d"'
    )
    result = host.run(f"runuser -u nobody -- sh -c '{script}'")
    assert result.rc == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert "global.index-url='https://pypi.org/simple'" in result.stdout
    assert f"global.cert='{BUNDLE}'" in result.stdout
    assert "six 1.16.0" in result.stdout


def pip_install_from_private_index(host, leaf, port):
    """pip (default settings: /etc/pip.conf) as nobody, from an index served with ``leaf``."""
    base = f"/tmp/probe-index-{leaf}"
    host.run(f"rm -rf {base} && mkdir -p {base}")
    host.run(f"cat > {base}/serve.py <<'EOF'\n{INDEX_SERVER}\nEOF")
    pip = (
        'set -e; d=$(mktemp -d); /usr/bin/python3 -m venv "$d/v"; '
        f'"$d/v/bin/pip" install --no-cache-dir --disable-pip-version-check --retries 0 '
        f"--index-url https://localhost:{port}/simple djdeploy-probe==1.0; "
        '"$d/v/bin/python" -c "import djdeploy_probe; print(\\"probe\\", djdeploy_probe.VERSION)"'
    )
    return host.run(
        f"python3 {base}/serve.py {PKI}/{leaf}.crt {PKI}/{leaf}.key {port} > {base}/log 2>&1 & "
        "srv=$!; for i in $(seq 50); do grep -q ready "
        f"{base}/log && break; sleep 0.2; done; rc=0; "
        f"runuser -u nobody -- sh -c '{pip}' || rc=$?; kill $srv; exit $rc"
    )


def test_pip_trusts_a_private_index_signed_by_the_extra_ca(host):
    """The use case of the extra CA: pip, with no option, trusts a private index's certificate."""
    result = pip_install_from_private_index(host, "leaf1", 8443)
    assert result.rc == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert "probe 1.0" in result.stdout


def test_pip_refuses_a_private_index_signed_by_an_unknown_ca(host):
    """Negative control: the same index with a certificate from a CA the role was not given."""
    result = pip_install_from_private_index(host, "leaf3", 8444)
    assert result.rc != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr
