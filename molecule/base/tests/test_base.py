"""Verify the base role as an operator would find the host."""

import pytest

DEPLOY = "deploy"


@pytest.mark.parametrize("package", ["git", "sudo", "acl", "locales", "rsync", "jq", "curl"])
def test_packages_installed(host, package):
    assert host.package(package).is_installed


def test_package_list_refresh_is_stamped(host):
    # apt is configured to stamp every successful refresh, and the converge's refresh of the
    # image's stale lists left the stamp (djdeploy_apt writes it too, for a run whose Python
    # read apt's configuration before the hook existed): the next run within cache_valid_time
    # does not refresh them again.
    assert "update-success-stamp" in host.run("apt-config dump").stdout
    hook = host.file("/etc/apt/apt.conf.d/15djdeploy-update-stamp")
    stamp = host.file("/var/lib/apt/periodic/update-success-stamp")
    assert stamp.exists
    assert stamp.mtime >= hook.mtime


def test_timezone(host):
    assert host.file("/etc/localtime").linked_to.endswith("Europe/Berlin")
    assert host.run("date +%Z").stdout.strip() in {"CET", "CEST"}


def test_locales_generated_and_default(host):
    available = host.run("locale -a").stdout.lower()
    assert "de_de.utf8" in available
    assert "en_us.utf8" in available
    assert host.file("/etc/default/locale").contains("^LANG=de_DE.UTF-8$")


def test_deploy_user(host):
    user = host.user(DEPLOY)
    assert user.exists
    assert user.shell == "/bin/bash"
    assert user.home == f"/home/{DEPLOY}"
    assert user.uid != 0
    # No usable password: key-only logins.
    assert host.run(f"passwd -S {DEPLOY}").stdout.split()[1] == "L"


def test_authorized_keys(host):
    ssh_dir = host.file(f"/home/{DEPLOY}/.ssh")
    assert ssh_dir.is_directory
    assert ssh_dir.user == DEPLOY
    assert ssh_dir.mode == 0o700
    keys = host.file(f"/home/{DEPLOY}/.ssh/authorized_keys")
    assert keys.user == DEPLOY
    assert keys.mode == 0o600
    pub = host.file("/root/.ssh/molecule_deploy.pub").content_string.strip()
    assert keys.content_string.strip() == pub


def test_sudoers_file(host):
    sudoers = host.file(f"/etc/sudoers.d/{DEPLOY}")
    assert sudoers.user == "root"
    assert sudoers.group == "root"
    assert sudoers.mode == 0o440
    check = host.run("visudo -c")
    assert check.rc == 0, check.stdout + check.stderr


def test_deploy_user_logs_in_over_ssh_and_sudoes(host):
    """The real path Ansible takes: SSH with the key, then passwordless sudo."""
    result = host.run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-i /root/.ssh/molecule_deploy {DEPLOY}@127.0.0.1 'id -un; sudo -n id -u'"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == [DEPLOY, "0"]


def test_journald_limits(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-djdeploy.conf")
    assert conf.mode == 0o644
    assert conf.contains("^SystemMaxUse=200M$")
    assert conf.contains("^Storage=persistent$")
    assert host.service("systemd-journald").is_running
    # journald itself reports the limit it applied.
    shown = host.run("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=200M" in shown.stdout


def test_systemd_healthy(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", failed
