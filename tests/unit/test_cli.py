"""The djdeploy CLI without hosts: parsing, bad input, inventory handling, command lines,
exit codes, and the vault edit with a real ansible-vault."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from djdeploy import PROJECT, ansible, cli, inventory, vault
from djdeploy.errors import EXIT_FAILED, EXIT_INVENTORY, EXIT_LOCKED, EXIT_USAGE, CliError

LISTING = {
    "_meta": {"hostvars": {}},
    "all": {"children": ["ungrouped", "web", "db", "app"]},
    "web": {"hosts": ["web1"], "children": ["canary"]},
    "canary": {"hosts": ["web2"]},
    "db": {"hosts": ["db1"]},
}
FACTS = {
    "address": "10.0.0.5",
    "port": 2200,
    "user": "deploy",
    "key": "/keys/id",
    "common_args": '-o ProxyCommand="docker exec -i %h /usr/sbin/sshd -i" -o LogLevel=ERROR',
    "extra_args": "",
    "app": "shop",
    "runtime_user": "shop",
    "deploy_user": "deploy",
}


def adhoc_doc(facts: Mapping[str, Mapping[str, Any]]) -> str:
    hosts = {h: {"msg": json.dumps(f), "changed": False} for h, f in facts.items()}
    doc = {"plays": [{"tasks": [{"hosts": hosts, "task": {"name": "debug"}}]}]}
    # The project's profile_tasks callback prints a line before the JSON document.
    return "Wednesday 02 December 2026  11:38:20 +0000 (0:00:00.022) ****\n" + json.dumps(
        doc, indent=4
    )


class FakeExecutor:
    """Records every command; answers from canned results."""

    def __init__(self, *, stream_rc: int = 0, stream_out: str = "", attach_rc: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.stream_rc = stream_rc
        self.stream_out = stream_out
        self.attach_rc = attach_rc
        self.docs: dict[str, str] = {}

    def capture(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None
    ) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        if argv[0] == "ansible-inventory":
            return 0, json.dumps(LISTING), ""
        if argv[0] == "ansible":
            names = argv[1].split(",")
            return 0, adhoc_doc({n: FACTS for n in names}), ""
        if argv[0] == "ansible-playbook":
            return 0, self.docs[Path(argv[3]).name] + "\nTASKS RECAP ***\n", ""
        if argv[0] == "ssh":
            return self.attach_rc, "out\n", "err\n"
        raise AssertionError(f"unexpected command {argv}")

    def stream(self, argv: Sequence[str], env: Mapping[str, str], out: IO[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        extra = json.loads(argv[argv.index("-e") + 1]) if "-e" in argv else {}
        if "djdeploy_report_file" in extra and self.stream_rc == 0:
            report = {"summary": ["release of shop: R1, 2 of 2 host(s) switched"]}
            Path(extra["djdeploy_report_file"]).write_text(json.dumps(report))
        out.write(self.stream_out)
        return self.stream_rc, self.stream_out

    def attach(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        self.calls.append(list(argv))
        return self.attach_rc

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        raise AssertionError("not used")


def invoke(
    argv: list[str], executor: FakeExecutor | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str, FakeExecutor]:
    fake = executor or FakeExecutor()
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, executor=fake, env=env or {}, out=out, err=err)
    return code, out.getvalue(), err.getvalue(), fake


# --- Parsing and bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["config:set", "DEBUG"], "has no '='"),
        (["config:set", "1DEBUG=0"], "not a valid environment variable name"),
        (["config:set", "MY-KEY=0"], "not a valid environment variable name"),
        (["config:set", "A=one\ntwo"], "contains a newline"),
        (["config:set", "A=it's"], "single quote"),
        (["config:unset", "A B"], "not a valid environment variable name"),
        (["release", "--upload-pack=evil"], "unrecognized arguments"),
        (["release", "-x"], "unrecognized arguments"),
        (["release", "main..dev"], "is not a branch, tag or commit name"),
        (["rollback", "previous"], "is not a release id"),
        (["run"], "run needs a manage.py command"),
        (["run", "-i", "--json", "--", "shell"], "--json does not go with -i"),
        (["restore", "--confirm", "shop", "../etc/passwd"], "is not a dump file name"),
        (["restore"], "the following arguments are required: --confirm"),
        (["logs", "-n", "0"], "--lines must be at least 1"),
        (["scale", "worker"], "'worker' is not PROCESS=N"),
        (["scale", "worker=-1"], "'worker=-1' is not PROCESS=N"),
        (["scale", "Worker=2"], "is not PROCESS=N"),
        (["scale", "web=4"], "web is scaled with gunicorn_workers"),
        (["maintenance"], "the following arguments are required: state"),
        (["maintenance", "maybe"], "invalid choice: 'maybe'"),
    ],
)
def test_bad_input_fails_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeExecutor()
    try:
        code, _, err, _ = invoke(argv, fake)
    except SystemExit as exc:  # argparse's own errors
        code, err = int(str(exc.code)), capsys.readouterr().err
    assert code == EXIT_USAGE
    assert message in err
    assert "fix:" in err
    assert fake.calls == []


def test_inventory_goes_before_or_after_the_verb() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["-i", "a", "releases"]).inventory == "a"
    assert parser.parse_args(["releases", "-i", "b"]).inventory == "b"
    assert parser.parse_args(["releases"]).inventory == "inventories/local"
    run = parser.parse_args(["-i", "a", "run", "-i", "--", "shell"])
    assert (run.inventory, run.interactive) == ("a", True)
    assert parser.parse_args(["run", "--inventory", "c", "--", "check"]).inventory == "c"


def test_help_documents_every_exit_code() -> None:
    text = cli.build_parser().format_help()
    for code in ("0", "1", "2", "3", "4", "255"):
        assert f"\n  {code:>3}  " in text
    for verb in cli.VERBS:
        assert verb in text


def test_missing_inventory_is_an_inventory_error() -> None:
    code, _, err, fake = invoke(["releases", "-i", "/nonexistent/inventory"])
    assert code == EXIT_INVENTORY
    assert "does not exist" in err
    assert fake.calls == []


# --- Inventory handling ------------------------------------------------------------------


def test_groups_follow_children() -> None:
    inv = inventory.parse_groups("inv", json.dumps(LISTING))
    assert inv.web == ("web1", "web2")
    assert inv.db == ("db1",)
    assert inv.web_host(None) == "web1"
    assert inv.web_host("web2") == "web2"
    with pytest.raises(CliError) as bad:
        inv.web_host("db1")
    assert bad.value.code == EXIT_INVENTORY
    assert "web1, web2" in bad.value.fix


def test_inventory_without_web_hosts() -> None:
    inv = inventory.parse_groups("inv", json.dumps({"db": {"hosts": ["db1"]}}))
    with pytest.raises(CliError, match="no host in the 'web' group"):
        inv.web_host(None)


def test_unreadable_inventory() -> None:
    with pytest.raises(CliError) as bad:
        inventory.load("inv", lambda argv: (1, "", "ERROR! vault secrets not found"))
    assert bad.value.code == EXIT_INVENTORY
    assert "vault secrets" in bad.value.cause


def test_host_facts_become_an_ssh_command() -> None:
    hosts = inventory.parse_host_facts(["web1"], adhoc_doc({"web1": FACTS}))
    host = hosts["web1"]
    cmd = host.ssh(host.manage(["shell", "-c", "print('hi there')"]))
    assert cmd[:4] == ["ssh", "-T", "-o", "BatchMode=yes"]
    assert cmd[cmd.index("-p") + 1] == "2200"
    assert cmd[cmd.index("-i") + 1] == "/keys/id"
    assert "ProxyCommand=docker exec -i %h /usr/sbin/sshd -i" in cmd
    assert cmd[-3:-1] == ["deploy@10.0.0.5", "--"]
    assert cmd[-1] == (
        "sudo -n -u shop /usr/local/bin/shop-manage shell -c 'print('\"'\"'hi there'\"'\"')'"
    )
    assert host.ssh(["true"], tty=True)[1] == "-t"


def test_host_without_app_name_is_an_inventory_error() -> None:
    doc = json.dumps(
        {
            "plays": [
                {"tasks": [{"hosts": {"web1": {"failed": True, "msg": "'app_name' is undefined"}}}]}
            ]
        }
    )
    with pytest.raises(CliError, match="app_name"):
        inventory.parse_host_facts(["web1"], doc)


def test_json_run_is_read_despite_text_after_it() -> None:
    doc = {
        "plays": [
            {
                "tasks": [
                    {
                        "task": {"name": "release : Releases | Read the releases"},
                        "hosts": {"web1": {"lines": ["* R1"]}},
                    }
                ]
            }
        ]
    }
    parsed = ansible.parse_json_run("warning\n" + json.dumps(doc, indent=4) + "\nTASKS RECAP\n")
    assert ansible.task_results(parsed, "Releases | Read the releases") == {
        "web1": {"lines": ["* R1"]}
    }


# --- Command construction and exit codes -------------------------------------------------


def test_release_runs_the_playbook_with_the_ref_and_prints_the_summary() -> None:
    code, out, _, fake = invoke(["release", "0123abcd" * 5, "--force"])
    assert code == 0
    (call,) = fake.calls
    assert call[:4] == [
        "ansible-playbook",
        "-i",
        str((PROJECT / "inventories" / "local").resolve()),
        str(PROJECT / "playbooks" / "release.yml"),
    ]
    extra = json.loads(call[5])
    assert extra["app_ref"] == "0123abcd" * 5
    assert extra["release_force"] is True
    assert extra["djdeploy_report_file"].endswith("report.json")
    assert "release of shop: R1, 2 of 2 host(s) switched" in out


def test_rollback_and_restart_command_lines() -> None:
    _, _, _, fake = invoke(["rollback", "20261202T101500Z-0123abcd", "--allow-migrations"])
    assert Path(fake.calls[0][3]).name == "rollback.yml"
    extra = json.loads(fake.calls[0][5])
    assert extra["release_rollback_to"] == "20261202T101500Z-0123abcd"
    assert extra["release_rollback_allow_migrations"] is True
    _, _, _, fake = invoke(["restart", "--break-lock"])
    assert Path(fake.calls[0][3]).name == "restart.yml"
    assert json.loads(fake.calls[0][5])["release_break_lock"] is True


def test_release_json_output() -> None:
    code, out, _, _ = invoke(["release", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    assert data["report"]["summary"][0].startswith("release of shop")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("fatal: release: demo on web1 is locked by alice since ...", EXIT_LOCKED),
        ("fatal: the ref 'nope' does not exist", EXIT_FAILED),
    ],
)
def test_failed_playbook_exit_codes(output: str, expected: int) -> None:
    code, out, err, _ = invoke(
        ["release", "--json"], FakeExecutor(stream_rc=2, stream_out=output + "\n")
    )
    assert code == expected
    assert json.loads(out)["exit_code"] == expected
    assert "fix:" in err


def test_run_returns_the_commands_exit_code_and_runs_manage_as_the_runtime_user() -> None:
    code, _, _, fake = invoke(
        ["run", "--host", "web2", "--", "check", "--deploy"], FakeExecutor(attach_rc=3)
    )
    assert code == 3
    assert fake.calls[0][0] == "ansible-inventory"
    assert fake.calls[1][:2] == ["ansible", "web2"]
    ssh = fake.calls[2]
    assert ssh[1] == "-T"
    assert ssh[-1] == "sudo -n -u shop /usr/local/bin/shop-manage check --deploy"


def test_run_interactive_uses_a_tty_and_json_captures() -> None:
    _, _, _, fake = invoke(["run", "-i", "--", "shell"])
    assert fake.calls[-1][1] == "-t"
    code, out, _, _ = invoke(["run", "--json", "--", "check"], FakeExecutor(attach_rc=1))
    assert code == 1
    assert json.loads(out) | {"command": ["check"]} == {
        "verb": "run",
        "host": "web1",
        "command": ["check"],
        "exit_code": 1,
        "stdout": "out\n",
        "stderr": "err\n",
    }


def test_run_on_a_host_that_is_not_a_web_host() -> None:
    code, _, err, _ = invoke(["run", "--host", "db1", "--", "check"])
    assert code == EXIT_INVENTORY
    assert "pick one of: web1, web2" in err


def releases_doc(hosts: Mapping[str, list[dict[str, Any]]]) -> str:
    results = {
        h: {"releases": rels, "lines": [("* " if r["live"] else "  ") + r["id"] for r in rels]}
        for h, rels in hosts.items()
    }
    task = {"task": {"name": "release : Releases | Read the releases of shop"}, "hosts": results}
    return json.dumps({"plays": [{"tasks": [task]}]}, indent=4)


def test_releases_text_and_json() -> None:
    fake = FakeExecutor()
    rel = {"id": "R1", "live": True, "record": {"commit": "c1"}}
    fake.docs["releases.yml"] = releases_doc({"web1": [rel], "web2": []})
    code, out, _, _ = invoke(["releases"], fake)
    assert code == 0
    assert "web1:\n  * R1\nweb2:\n  (no release)\n" in out
    assert "live: web1 R1, web2 nothing" in out
    code, out, _, _ = invoke(["releases", "--json"], fake)
    assert json.loads(out)["live"] == {"web1": "R1", "web2": ""}


def test_lock_break_shows_who_held_it() -> None:
    fake = FakeExecutor()
    holder = {"who": "ci", "since": "2026-12-02T10:00:00Z", "action": "release", "run": "R2"}
    read = {
        "task": {"name": "release : Lock | Read the deploy lock of shop"},
        "hosts": {
            "web1": {"held": True, "holder": holder, "stale": False},
            "web2": {"held": False, "holder": {}},
        },
    }
    broke = {"task": {"name": "release : Lock | Break it"}, "hosts": {"web1": {"released": True}}}
    fake.docs["lock.yml"] = json.dumps({"plays": [{"tasks": [read, broke]}]})
    code, out, _, _ = invoke(["lock", "--break"], fake)
    assert code == 0
    assert json.loads(fake.calls[0][5]) == {"release_break_lock": True}
    assert "web1: held by ci since 2026-12-02T10:00:00Z (release R2); broken now" in out
    assert "web2: free" in out


def test_maintenance_on_and_off_run_the_playbook_and_report_each_host() -> None:
    fake = FakeExecutor()
    wrote = {
        "task": {"name": "nginx : Maintenance | Write the flag"},
        "hosts": {"lb1": {"changed": True}, "lb2": {"changed": False}},
    }
    fake.docs["maintenance.yml"] = json.dumps({"plays": [{"tasks": [wrote]}]})
    code, out, _, _ = invoke(["maintenance", "on"], fake)
    assert code == 0
    assert Path(fake.calls[0][3]).name == "maintenance.yml"
    assert json.loads(fake.calls[0][5]) == {"djdeploy_maintenance": True}
    assert "lb1: maintenance on\nlb2: maintenance on (was already)\n" in out
    assert "2 host(s): nginx answers 503 with the maintenance page" in out

    removed = {"task": {"name": "nginx : Maintenance | Remove the flag"}, "hosts": {"w": {}}}
    fake.docs["maintenance.yml"] = json.dumps({"plays": [{"tasks": [wrote, removed]}]})
    code, out, _, _ = invoke(["maintenance", "off", "--json"], fake)
    assert code == 0
    assert json.loads(fake.calls[-1][5]) == {"djdeploy_maintenance": False}
    assert json.loads(out) == {
        "verb": "maintenance",
        "ok": True,
        "state": "off",
        "hosts": {"w": {"changed": False}},
    }

    fake.docs["maintenance.yml"] = json.dumps({"plays": [{"tasks": []}]})
    code, _, err, _ = invoke(["maintenance", "on"], fake)
    assert code == EXIT_INVENTORY
    assert "no host in the lb or web group" in err


def test_logs_merge_by_time_and_keep_each_hosts_order() -> None:
    merged = cli.merge_lines(
        {
            "web2": ["2026-12-02T10:00:01+0000 b first", "2026-12-02T10:00:03+0000 b second"],
            "web1": ["2026-12-02T10:00:02+0000 a first"],
        }
    )
    assert [h for h, _ in merged] == ["web2", "web1", "web2"]


def test_journal_command() -> None:
    host = inventory.parse_host_facts(["web1"], adhoc_doc({"web1": FACTS}))["web1"]
    args = cli.build_parser().parse_args(["logs", "-f", "--since", "10 min ago", "-n", "5"])
    assert cli.journal_command(host, args)[-1] == (
        "sudo -n journalctl --no-pager -o short-iso -u 'shop@*' --since '10 min ago' -f"
    )
    args = cli.build_parser().parse_args(["logs"])
    assert cli.journal_command(host, args)[-1].endswith("-u 'shop@*' -n 100")


def test_logs_of_one_process_or_all_of_them() -> None:
    facts = {**FACTS, "processes": ["worker", "beat"], "schedules": ["sendalerts"]}
    host = inventory.parse_host_facts(["web1"], adhoc_doc({"web1": facts}))["web1"]

    def units(*argv: str) -> str:
        args = cli.build_parser().parse_args(["logs", *argv])
        remote = cli.journal_command(host, args)[-1]
        return remote.split(" -o short-iso ", 1)[1].rsplit(" -n ", 1)[0]

    assert units() == ("-u 'shop@*' -u 'shop-worker@*' -u 'shop-beat@*' -u shop-sendalerts.service")
    assert units("-p", "web") == "-u 'shop@*'"
    assert units("-p", "worker") == "-u 'shop-worker@*'"
    assert units("--process", "sendalerts") == "-u shop-sendalerts.service"
    with pytest.raises(CliError) as refused:
        units("-p", "celery")
    assert refused.value.code == EXIT_USAGE
    assert "pick one of: web, worker, beat, sendalerts" in str(refused.value.fix)


def test_ps_shows_each_host_and_flags_what_is_down() -> None:
    fake = FakeExecutor()
    up = {
        "release": "R2",
        "health": "200",
        "processes": [{"unit": "shop-worker@1.service", "state": "active/running"}],
        "lines": ["release R2, live color blue, health 200", "  shop-worker@1.service: active"],
    }
    down = {**up, "processes": [{"unit": "shop-worker@1.service", "state": "failed/failed"}]}
    task = {"task": {"name": "release : Ps | Read what shop runs"}, "hosts": {"web1": up}}
    fake.docs["ps.yml"] = json.dumps({"plays": [{"tasks": [task]}]})
    code, out, _, _ = invoke(["ps"], fake)
    assert code == 0
    assert "web1:\n  release R2, live color blue, health 200\n" in out
    assert out.rstrip().endswith("1 host(s), all up")
    task["hosts"] = {"web1": up, "web2": down}
    fake.docs["ps.yml"] = json.dumps({"plays": [{"tasks": [task]}]})
    code, out, _, _ = invoke(["ps", "--json"], fake)
    data = json.loads(out)
    assert data["down"] == ["web2"]
    assert data["hosts"]["web1"]["release"] == "R2"


# --- The vault, with a real ansible-vault ------------------------------------------------

VAULT_TEXT = """---
# Secrets of this environment.
app_secret_key: not-a-real-secret-0123456789-abcdefghijklmnopqrstuvwxyz
app_config:
  OLD: value
app_db_password: pw  # kept as it is
"""


@pytest.fixture
def vaulted(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web1:\n")
    password = tmp_path / "pass"
    password.write_text("test-vault-password\n")
    env = ansible.environment({"PATH": "/usr/bin:/bin"}, str(password))
    proc = subprocess.run(
        ["ansible-vault", "encrypt", "--output", str(inv / "group_vars/all/vault.yml"), "-"],
        input=VAULT_TEXT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.returncode == 0
    return inv, env


def decrypt(path: Path, env: dict[str, str]) -> str:
    return subprocess.run(
        ["ansible-vault", "view", str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_config_set_and_unset_round_trip_keeps_the_file_encrypted(
    vaulted: tuple[Path, dict[str, str]],
) -> None:
    inv, env = vaulted
    path = inv / "group_vars" / "all" / "vault.yml"
    out, err = io.StringIO(), io.StringIO()
    argv = ["-i", str(inv), "config:set", "NEW=a b=c", "OLD=changed", "--no-apply"]
    assert cli.main(argv, env=env, out=out, err=err) == 0, err.getvalue()
    assert path.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert "NEW" not in path.read_text()
    text = decrypt(path, env)
    assert yaml.safe_load(text)["app_config"] == {"NEW": "a b=c", "OLD": "changed"}
    # The rest of the file is kept as it was, comments included.
    assert "# Secrets of this environment." in text
    assert "app_db_password: pw  # kept as it is" in text
    assert list(path.parent.iterdir()) == [path], "no temporary file is left behind"

    out = io.StringIO()
    assert cli.main(["-i", str(inv), "config", "--json"], env=env, out=out, err=err) == 0
    assert json.loads(out.getvalue())["config"] == {"NEW": "a b=c", "OLD": "changed"}

    argv = ["-i", str(inv), "config:unset", "OLD", "--no-apply"]
    assert cli.main(argv, env=env, out=io.StringIO(), err=err) == 0
    assert path.read_text().startswith("$ANSIBLE_VAULT;")
    assert yaml.safe_load(decrypt(path, env))["app_config"] == {"NEW": "a b=c"}


def test_config_set_with_a_wrong_password_changes_nothing(
    vaulted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    inv, env = vaulted
    path = inv / "group_vars" / "all" / "vault.yml"
    before = path.read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    err = io.StringIO()
    argv = ["-i", str(inv), "--vault-password-file", str(wrong), "config:set", "A=1", "--no-apply"]
    assert cli.main(argv, env=env, out=io.StringIO(), err=err) == EXIT_INVENTORY
    assert "cannot decrypt" in err.getvalue()
    assert path.read_bytes() == before


def test_a_plain_text_vault_is_refused(tmp_path: Path) -> None:
    store = vault.Vault(str(tmp_path), lambda argv, stdin: (0, "", ""))
    store.path.parent.mkdir(parents=True)
    store.path.write_text("app_secret_key: plain\n")
    with pytest.raises(CliError, match="is not encrypted"):
        store.config()


def test_replace_block_appends_when_missing() -> None:
    assert vault.replace_block("a: 1", "app_config", {"B": "2", "A": "1"}) == (
        "a: 1\napp_config:\n  A: '1'\n  B: '2'\n"
    )
    assert vault.replace_block("", "app_config", {}) == "---\napp_config: {}\n"


class ScaleExecutor(FakeExecutor):
    """The ad-hoc facts of an app with a worker and a singleton beat."""

    def capture(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None
    ) -> tuple[int, str, str]:
        if argv[0] == "ansible":
            self.calls.append(list(argv))
            facts = {**FACTS, "processes": ["beat", "worker"], "singletons": ["beat"]}
            return 0, adhoc_doc({n: facts for n in argv[1].split(",")}), ""
        return super().capture(argv, env, stdin)


def test_scale_writes_the_inventory_then_applies_with_a_release_of_the_live_commit(
    tmp_path: Path,
) -> None:
    inv = tmp_path / "prod"
    (inv / "group_vars" / "all").mkdir(parents=True)
    fake = ScaleExecutor()
    rel = {"id": "R1", "live": True, "record": {"commit": "c0ffee"}}
    fake.docs["releases.yml"] = releases_doc({"web1": [rel]})
    code, out, _, _ = invoke(["-i", str(inv), "scale", "worker=3", "beat=0"], fake)
    assert code == 0, out
    scale = inv / "group_vars" / "all" / "scale.yml"
    assert yaml.safe_load(scale.read_text()) == {"app_scale": {"beat": 0, "worker": 3}}
    assert "beat=0 (was default), worker=3 (was default) changed" in out
    release = [c for c in fake.calls if c[0] == "ansible-playbook" and "release.yml" in c[3]]
    assert len(release) == 1
    assert json.loads(release[0][5])["app_ref"] == "c0ffee"

    fake.calls.clear()
    code, out, _, _ = invoke(["-i", str(inv), "scale", "worker=3"], fake)
    assert code == 0
    assert "nothing changed" in out
    assert not [c for c in fake.calls if c[0] == "ansible-playbook"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scale", "celery=2"], "'celery' is not a process of the app"),
        (["scale", "beat=2"], "beat is a singleton"),
    ],
)
def test_scale_refuses_what_the_inventory_does_not_allow(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    inv = tmp_path / "prod"
    (inv / "group_vars" / "all").mkdir(parents=True)
    code, _, err, fake = invoke(["-i", str(inv), *argv], ScaleExecutor())
    assert code == EXIT_USAGE
    assert message in err
    assert not (inv / "group_vars" / "all" / "scale.yml").exists()
    assert not [c for c in fake.calls if c[0] == "ansible-playbook"]


def test_worker_only_hosts_come_from_the_groups_app_processes_names() -> None:
    listing = {
        "web": {"hosts": ["web1", "web2"]},
        "worker": {"hosts": ["web2", "w1"]},
        "db": {"hosts": ["db1"]},
        "_meta": {
            "hostvars": {
                "web1": {
                    "app_processes": {
                        "celery": {"command": "celery worker", "group": "worker"},
                        "beat": {"command": "celery beat"},
                    }
                }
            }
        },
    }
    inv = inventory.parse_groups("inv", json.dumps(listing))
    assert (inv.web, inv.workers) == (("web1", "web2"), ("w1",))
    assert inv.app_host("w1") == "w1" and inv.app_host("web2") == "web2"
    with pytest.raises(CliError) as bad:
        inv.app_host("db1")
    assert "web1, web2, w1" in bad.value.fix
    # Without such a group (or app_processes): no worker-only hosts.
    assert inventory.parse_groups("inv", json.dumps(LISTING)).workers == ()
