"""The balancer rotation module (roles/nginx/library/djdeploy_rotation.py) on tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .loader import load

rot = load("roles/nginx/library/djdeploy_rotation.py")
ADDRESS = "10.0.0.11:8000"


class Balancer:
    """Plays nginx -t, nginx -s reload and the backend's answers."""

    def __init__(self, statuses: list[int | None] | None = None, nginx_t_rc: int = 0) -> None:
        self.statuses = statuses or [200]
        self.nginx_t_rc = nginx_t_rc
        self.calls: list[list[str]] = []
        self.gets = 0
        self.sleeps = 0

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[0] == "nginx":
            return self.nginx_t_rc, "", "emerg" if self.nginx_t_rc else ""
        return 0, "", ""

    def get(self, address: str, path: str, headers: dict[str, str], timeout: float) -> int:
        assert (address, path, headers["Host"]) == (ADDRESS, "/healthz", "demo.example.com")
        self.gets += 1
        status = self.statuses[0]
        if len(self.statuses) > 1:
            self.statuses.pop(0)
        if status is None:
            raise ConnectionRefusedError
        return status

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1


def rotation(tmp_path: Path, balancer: Balancer) -> object:
    return rot.Rotation(
        backends_dir=tmp_path,
        name="web1",
        address=ADDRESS,
        check_host="demo.example.com",
        run=balancer.run,
        get=balancer.get,
        sleep=balancer.sleep,
        retries=3,
    )


def line(tmp_path: Path) -> str:
    return (tmp_path / "web1.conf").read_text()


def test_out_marks_the_host_down_and_reloads(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS};\n")
    balancer = Balancer()
    result = rot.apply(rotation(tmp_path, balancer), "out", True, False, False)
    assert result["changed"] and result["ok"]
    assert line(tmp_path) == f"server {ADDRESS} down;\n"
    assert balancer.calls == [["nginx", "-t", "-q"], ["nginx", "-s", "reload"]]
    assert balancer.gets == 0


def test_in_only_after_a_200_and_unchanged_files_do_not_reload(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS} down;\n")
    balancer = Balancer([None, 502, 200])
    result = rot.apply(rotation(tmp_path, balancer), "in", True, False, False)
    assert result == {"changed": True, "ok": True, "status": 200, "line": f"server {ADDRESS};"}
    assert balancer.gets == 3 and balancer.sleeps == 2
    again = Balancer()
    assert not rot.apply(rotation(tmp_path, again), "in", True, False, False)["changed"]
    assert again.calls == []


def test_in_fails_and_leaves_the_host_out_when_the_check_fails(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS} down;\n")
    balancer = Balancer([502])
    with pytest.raises(rot.RotationError, match=r"got 502 .* web1 stays out"):
        rot.apply(rotation(tmp_path, balancer), "in", True, False, False)
    assert line(tmp_path) == f"server {ADDRESS} down;\n"
    assert balancer.calls == []


def test_not_strict_reports_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS} down;\n")
    result = rot.apply(rotation(tmp_path, Balancer([None])), "in", False, False, False)
    assert result["ok"] is False and result["status"] == 0 and not result["changed"]
    assert line(tmp_path) == f"server {ADDRESS} down;\n"


def test_check_only_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS} down;\n")
    balancer = Balancer([200])
    result = rot.apply(rotation(tmp_path, balancer), "in", False, True, False)
    assert result["ok"] and not result["changed"]
    assert line(tmp_path) == f"server {ADDRESS} down;\n"


def test_nginx_refusing_the_file_puts_the_old_one_back(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS};\n")
    balancer = Balancer(nginx_t_rc=1)
    with pytest.raises(rot.RotationError, match="old content is back"):
        rot.apply(rotation(tmp_path, balancer), "out", True, False, False)
    assert line(tmp_path) == f"server {ADDRESS};\n"
    assert ["nginx", "-s", "reload"] not in balancer.calls


def test_check_mode_reports_the_change_without_writing(tmp_path: Path) -> None:
    (tmp_path / "web1.conf").write_text(f"server {ADDRESS};\n")
    balancer = Balancer()
    assert rot.apply(rotation(tmp_path, balancer), "out", True, False, True)["changed"]
    assert line(tmp_path) == f"server {ADDRESS};\n" and balancer.calls == []
