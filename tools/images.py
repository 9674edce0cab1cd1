"""Build the systemd test images for Molecule (Debian 12 and Debian 13).

Images are tagged ``djdeploy-systemd:<distro>-<hash>`` where the hash covers every input
(Dockerfile, extra CA bundle, base image id), and aliased ``djdeploy-systemd:<distro>``,
the name the Molecule configuration uses. An image whose hash tag exists is reused.

The Dockerfile starts ``FROM debian:<suite>``. When that base is neither present nor
pullable (offline hosts, no registry), it is produced with ``debootstrap`` and
``docker import`` under the same name, so one Dockerfile serves laptops and offline hosts.

Environment:
  TEST_EXTRA_CA_BUNDLE  PEM file with extra CA certificates to trust in the image (system
                        store and pip), e.g. a TLS-inspecting proxy's CA. Unset: the host's
                        system bundle when it exists; set but empty: none.
  DEBOOTSTRAP_MIRROR    optional Debian mirror for debootstrap (default: the host's apt
                        source for the Debian archive, else debootstrap's own default).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = ROOT / "molecule" / "shared" / "image"
REPOSITORY = "djdeploy-systemd"
DISTROS: dict[str, str] = {"debian12": "bookworm", "debian13": "trixie"}
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def image_id(name: str) -> str | None:
    """The image id of ``name``, or None when it is not present locally."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def split_certificates(bundle_text: str) -> list[str]:
    """Return each PEM certificate of a bundle, normalised to end with a newline."""
    return [match.group(0).strip() + "\n" for match in PEM_RE.finditer(bundle_text)]


HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def extra_ca_certificates() -> list[str]:
    """Certificates of TEST_EXTRA_CA_BUNDLE; unset means the host's system bundle (when there
    is one), so containers trust what the host trusts (TLS-inspecting proxies); empty: none."""
    path = os.environ.get("TEST_EXTRA_CA_BUNDLE")
    if path is None:
        path = str(HOST_BUNDLE) if HOST_BUNDLE.is_file() else ""
    path = path.strip()
    if not path:
        return []
    bundle = Path(path)
    if not bundle.is_file():
        sys.exit(f"images: TEST_EXTRA_CA_BUNDLE={path} is not a readable file")
    certs = split_certificates(bundle.read_text(errors="replace"))
    if not certs:
        sys.exit(f"images: TEST_EXTRA_CA_BUNDLE={path} holds no PEM certificate")
    return certs


def host_debian_mirror() -> str | None:
    """The Debian archive URI the host's apt uses, if any (deb822 or one-line format)."""
    explicit = os.environ.get("DEBOOTSTRAP_MIRROR", "").strip()
    if explicit:
        return explicit
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        if not source.is_file() or not source.name.endswith((".list", ".sources")):
            continue
        for line in source.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("#"):
                continue
            for token in line.replace("URIs:", " ").split():
                if re.match(r"^https?://\S+/debian/?$", token):
                    return token
    return None


def inputs_hash(base_id: str, certs: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(base_id.encode())
    for path in sorted(IMAGE_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(IMAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    for cert in certs:
        digest.update(cert.encode())
    return digest.hexdigest()[:12]


def debootstrap_base(suite: str, name: str) -> None:
    if shutil.which("debootstrap") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            run(["apt-get", "install", "-y", "-qq", "debootstrap"])
        else:
            sys.exit(
                f"images: {name} cannot be pulled and debootstrap is missing; "
                "install debootstrap (as root) or make a registry reachable"
            )
    mirror = host_debian_mirror()
    with tempfile.TemporaryDirectory(prefix=f"debootstrap-{suite}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(rootfs)]
        if mirror:
            cmd.append(mirror)
        print(
            f"images: debootstrap {suite} (mirror: {mirror or 'debootstrap default'})", flush=True
        )
        log = Path(tmp) / "debootstrap.log"
        with log.open("w") as handle:
            result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            sys.stderr.write(log.read_text()[-4000:])
            sys.exit(f"images: debootstrap {suite} failed")
        # Keep the base small and reproducible.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        print(f"images: importing {name}", flush=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "-", name], stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            sys.exit(f"images: packing the {suite} rootfs failed")


def ensure_base(suite: str) -> str:
    name = f"debian:{suite}"
    base = image_id(name)
    if base:
        return base
    pulled = subprocess.run(
        ["docker", "pull", "-q", name], capture_output=True, text=True, timeout=300, check=False
    )
    if pulled.returncode != 0:
        print(
            f"images: {name} cannot be pulled ({pulled.stderr.strip()[:120]}); building it",
            flush=True,
        )
        debootstrap_base(suite, name)
    base = image_id(name)
    if not base:
        sys.exit(f"images: {name} is still missing after pull/import")
    return base


def build(distro: str) -> str:
    suite = DISTROS[distro]
    base = ensure_base(suite)
    certs = extra_ca_certificates()
    tag = f"{REPOSITORY}:{distro}-{inputs_hash(base, certs)}"
    alias = f"{REPOSITORY}:{distro}"
    if image_id(tag):
        print(f"images: {tag} is up to date", flush=True)
    else:
        with tempfile.TemporaryDirectory(prefix="djdeploy-image-") as tmp:
            context = Path(tmp)
            shutil.copytree(IMAGE_DIR, context, dirs_exist_ok=True)
            ca_dir = context / "extra-ca"
            ca_dir.mkdir(exist_ok=True)
            (ca_dir / "README").write_text("extra CA certificates (TEST_EXTRA_CA_BUNDLE)\n")
            for index, cert in enumerate(certs):
                (ca_dir / f"extra-{index:03d}.crt").write_text(cert)
            print(f"images: building {tag}", flush=True)
            run(
                [
                    "docker",
                    "build",
                    "-q",
                    "--build-arg",
                    f"BASE_IMAGE=debian:{suite}",
                    "-t",
                    tag,
                    str(context),
                ],
                stdout=subprocess.DEVNULL,
            )
    run(["docker", "tag", tag, alias])
    return alias


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("distros", nargs="*", metavar="DISTRO", help=f"one of {sorted(DISTROS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.distros) - set(DISTROS))
    if unknown:
        parser.error(f"unknown distro {unknown}; choose from {sorted(DISTROS)}")
    for distro in args.distros or list(DISTROS):
        print(f"images: {build(distro)} ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
