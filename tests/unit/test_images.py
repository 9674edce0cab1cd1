"""tools/images.py: the parts that decide what goes into a test image and when to rebuild."""

from pathlib import Path

import pytest

from tools import images

CERT_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
CERT_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"


def test_split_certificates_keeps_each_pem_block() -> None:
    bundle = f"# comment\n{CERT_A}\n\nsome text\n{CERT_B}\n"
    assert images.split_certificates(bundle) == [CERT_A + "\n", CERT_B + "\n"]


def test_extra_ca_bundle_defaults_to_the_host_bundle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host = tmp_path / "host.crt"
    host.write_text(CERT_A)
    monkeypatch.setattr(images, "HOST_BUNDLE", host)
    monkeypatch.delenv("TEST_EXTRA_CA_BUNDLE", raising=False)
    assert images.extra_ca_certificates() == [CERT_A + "\n"]
    monkeypatch.setenv("TEST_EXTRA_CA_BUNDLE", "")
    assert images.extra_ca_certificates() == []


def test_extra_ca_bundle_without_certificates_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here")
    monkeypatch.setenv("TEST_EXTRA_CA_BUNDLE", str(empty))
    with pytest.raises(SystemExit, match="holds no PEM certificate"):
        images.extra_ca_certificates()


def test_inputs_hash_changes_with_every_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    monkeypatch.setattr(images, "IMAGE_DIR", tmp_path)
    base = images.inputs_hash("sha256:1", [])
    assert base == images.inputs_hash("sha256:1", [])
    assert base != images.inputs_hash("sha256:2", [])
    assert base != images.inputs_hash("sha256:1", [CERT_A])
    (tmp_path / "Dockerfile").write_text("FROM y\n")
    assert base != images.inputs_hash("sha256:1", [])


def test_mirror_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBOOTSTRAP_MIRROR", "http://mirror.invalid/debian")
    assert images.host_debian_mirror() == "http://mirror.invalid/debian"
