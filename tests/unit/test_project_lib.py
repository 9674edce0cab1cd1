"""Unit tests of roles/release/module_utils/djdeploy_project_lib.py (no git, no host).

The build module (library/djdeploy_build.py) runs it as its project step; tests of that step
in the build are in test_build_module.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest

from .loader import load

project = load("roles/release/module_utils/djdeploy_project_lib.py")

UV_PYPROJECT = """
[project]
name = "shop"
version = "0"
requires-python = ">=3.11"
dependencies = ["django>=5.2", "gunicorn"]
"""


def reader(files: dict[str, str]) -> Callable[[str], str | None]:
    return files.get


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("3.11.2", ">=3.11", True),
        ("3.11.2", ">=3.12", False),
        ("3.13.5", ">=3.12,<3.14", True),
        ("3.14.0", ">=3.12,<3.14", False),
        ("3.11.2", "==3.11.*", True),
        ("3.12.0", "==3.11.*", False),
        ("3.11.2", "!=3.11.*", False),
        ("3.11.2", "~=3.10", True),
        ("3.11.2", "~=3.10.1", False),
        ("3.10.4", "~=3.10.1", True),
        ("3.11.2", ">3.11", True),
        ("3.11.0", ">3.11", False),
        ("3.11.2", "<=3.11.2", True),
        # Poetry constraints.
        ("3.11.2", "^3.11", True),
        ("4.0.0", "^3.11", False),
        ("3.10.9", "^3.11", False),
        ("3.12.1", "~3.12", True),
        ("3.13.0", "~3.12", False),
        ("3.11.2", ">=3.10 <3.12", True),
        ("3.12.0", ">=3.10 <3.12", False),
        ("3.13.1", "~3.11 || ^3.13", True),
        ("3.12.1", "~3.11 || ^3.13", False),
        ("3.11.2", "*", True),
        ("3.11.2", "3.11.2", True),
    ],
)
def test_satisfies(version: str, spec: str, expected: bool) -> None:
    assert project.satisfies(version, spec) is expected


def test_a_bad_specifier_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a version specifier"):
        project.satisfies("3.11.2", ">>3.11")


@pytest.mark.parametrize(
    ("files", "method", "source"),
    [
        (
            {
                "uv.lock": "x",
                "poetry.lock": "x",
                "requirements.txt": "x",
                "pyproject.toml": UV_PYPROJECT,
            },
            "uv",
            "uv.lock",
        ),
        ({"poetry.lock": "x", "requirements.txt": "x"}, "poetry", "poetry.lock"),
        ({"requirements.txt": "django", "pyproject.toml": UV_PYPROJECT}, "requirements", None),
        ({"requirements/production.txt": "django"}, "requirements", "requirements/production.txt"),
        ({"pyproject.toml": UV_PYPROJECT}, "pyproject", "pyproject.toml"),
    ],
    ids=["uv-first", "poetry-before-requirements", "requirements", "nested", "pyproject-deps"],
)
def test_detection_order(files: dict[str, str], method: str, source: str | None) -> None:
    found = project.inspect_project(reader(files), "3.11.2")
    assert found.method == method
    assert found.source == (source or "requirements.txt")


def test_pyproject_without_build_system_installs_its_dependency_list() -> None:
    found = project.inspect_project(reader({"pyproject.toml": UV_PYPROJECT}), "3.11.2")
    assert found.dependencies == ["django>=5.2", "gunicorn"]
    assert found.build_system is False


def test_build_system_is_reported() -> None:
    text = UV_PYPROJECT + '\n[build-system]\nrequires = ["hatchling"]\n'
    found = project.inspect_project(reader({"uv.lock": "x", "pyproject.toml": text}), "3.11.2")
    assert found.method == "uv"
    assert found.build_system is True


def test_nothing_to_install_names_the_knob() -> None:
    with pytest.raises(project.ProjectError, match="app_requirements_file"):
        project.inspect_project(reader({"manage.py": ""}), "3.11.2")


def test_a_forced_method_needs_its_file() -> None:
    with pytest.raises(project.ProjectError, match="app_install_method is 'poetry'"):
        project.inspect_project(reader({"requirements.txt": "x"}), "3.11.2", method="poetry")


def test_an_explicit_requirements_file_wins() -> None:
    files = {"requirements.txt": "a", "reqs/live.txt": "django --hash=sha256:00"}
    found = project.inspect_project(reader(files), "3.11.2", requirements_file="reqs/live.txt")
    assert found.source == "reqs/live.txt"
    assert found.hashes is True


def test_the_digest_follows_the_lock() -> None:
    base = {"uv.lock": "one", "pyproject.toml": UV_PYPROJECT, "app.py": "a"}
    first = project.inspect_project(reader(base), "3.11.2").digest
    code_only = project.inspect_project(reader({**base, "app.py": "b"}), "3.11.2").digest
    relocked = project.inspect_project(reader({**base, "uv.lock": "two"}), "3.11.2").digest
    assert first == code_only
    assert first != relocked


def test_requires_python_refuses_an_old_interpreter_with_both_versions() -> None:
    text = UV_PYPROJECT.replace(">=3.11", ">=3.12")
    with pytest.raises(project.ProjectError) as error:
        project.inspect_project(
            reader({"uv.lock": "x", "pyproject.toml": text}), "3.11.2", python="/usr/bin/python3"
        )
    message = str(error.value)
    assert "requires Python >=3.12" in message
    assert "/usr/bin/python3 on this host is Python 3.11.2" in message
    assert "app_python" in message


def test_poetry_python_constraint_is_read() -> None:
    text = '[tool.poetry.dependencies]\npython = "^3.13"\ndjango = "^5.2"\n'
    files = {"poetry.lock": "x", "pyproject.toml": text}
    with pytest.raises(project.ProjectError, match=r"requires Python \^3.13"):
        project.inspect_project(reader(files), "3.11.2")
    assert project.inspect_project(reader(files), "3.13.5").requires_python == "^3.13"


def test_python_version_file_refuses_older_and_warns_on_newer() -> None:
    files = {"requirements.txt": "x", ".python-version": "3.12\n"}
    with pytest.raises(project.ProjectError, match=r"pins Python 3.12 \(.python-version\)"):
        project.inspect_project(reader(files), "3.11.2")
    found = project.inspect_project(reader(files), "3.13.1")
    assert found.warnings == [".python-version asks for 3.12; the venv is built with 3.13.1"]


def test_invalid_toml_is_reported() -> None:
    with pytest.raises(project.ProjectError, match="not valid TOML"):
        project.inspect_project(reader({"pyproject.toml": "[project"}), "3.11.2")


def options(**overrides: object) -> object:
    values: dict[str, object] = {
        "venvs_dir": "/srv/a/venvs",
        "release_dir": "/srv/a/releases/r1",
        "cache_dir": "/srv/a/shared/cache",
        "extra_packages": ["gunicorn"],
    }
    values.update(overrides)
    return project.InstallOptions(**values)


def test_uv_syncs_the_lock_without_dev_groups_or_the_project() -> None:
    found = project.inspect_project(
        reader({"uv.lock": "x", "pyproject.toml": UV_PYPROJECT}), "3.11.2"
    )
    venv = project.venv_path(found, options())
    steps = project.install_steps(found, options(index_url="https://idx.example/simple"))
    sync, extra = steps
    assert sync["argv"][3:] == [
        "/opt/djdeploy/tools/bin/uv",
        "sync",
        "--frozen",
        "--no-default-groups",
        "--no-install-project",
        "--python",
        f"{venv}/bin/python",
    ]
    assert sync["env"]["UV_PROJECT_ENVIRONMENT"] == venv
    assert sync["env"]["UV_CACHE_DIR"] == "/srv/a/shared/cache/uv"
    assert sync["env"]["UV_DEFAULT_INDEX"] == "https://idx.example/simple"
    assert sync["env"]["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert sync["env"]["UV_PYTHON_DOWNLOADS"] == "never"
    assert extra["argv"][-1] == "gunicorn"


def test_uv_installs_a_project_with_a_build_system_non_editable() -> None:
    text = UV_PYPROJECT + '\n[build-system]\nrequires = ["hatchling"]\n'
    found = project.inspect_project(reader({"uv.lock": "x", "pyproject.toml": text}), "3.11.2")
    assert "--no-editable" in project.install_steps(found, options())[0]["argv"]


def test_poetry_syncs_main_only_into_the_venv() -> None:
    found = project.inspect_project(reader({"poetry.lock": "x"}), "3.11.2")
    venv = project.venv_path(found, options(extra_packages=[]))
    sync = project.install_steps(found, options(extra_packages=[]))
    assert len(sync) == 1
    assert sync[0]["argv"][3:] == [
        "/opt/djdeploy/tools/bin/poetry",
        "sync",
        "--only",
        "main",
        "--no-root",
        "--no-ansi",
    ]
    assert sync[0]["env"]["VIRTUAL_ENV"] == venv
    assert sync[0]["env"]["POETRY_VIRTUALENVS_CREATE"] == "false"


def test_hashed_requirements_install_apart_from_extra_packages() -> None:
    files = {"requirements.txt": "django==5.2 --hash=sha256:00"}
    found = project.inspect_project(reader(files), "3.11.2")
    first, extra = project.install_steps(found, options(extra_args=["--no-binary", ":none:"]))
    assert first["argv"][-2:] == ["-r", "/srv/a/releases/r1/requirements.txt"]
    assert "gunicorn" not in first["argv"]
    assert extra["argv"][-1] == "gunicorn"
    assert "--cache-dir" in first["argv"]


def test_pyproject_without_build_system_installs_the_list() -> None:
    found = project.inspect_project(reader({"pyproject.toml": UV_PYPROJECT}), "3.11.2")
    first = project.install_steps(found, options(extra_packages=[]))[0]
    assert first["argv"][-2:] == ["django>=5.2", "gunicorn"]


def test_the_venv_is_keyed_by_its_inputs() -> None:
    base = {"requirements.txt": "django"}
    found = project.inspect_project(reader(base), "3.11.2")
    same = project.venv_path(found, options())
    assert project.venv_path(found, options()) == same
    assert project.venv_path(found, options(extra_packages=[])) != same
    newer = project.inspect_project(reader(base), "3.13.1")
    assert project.venv_path(newer, options()) != same


# The pip-based methods: (files, what follows the installer's own arguments).
BUILD_SYSTEM = UV_PYPROJECT + '\n[build-system]\nrequires = ["hatchling"]\n'
PIP_BASED = {
    "requirements": ({"r.txt": "django==5.2\n"}, ["-r", "/srv/a/releases/r1/r.txt"]),
    "pyproject-build-system": ({"pyproject.toml": BUILD_SYSTEM}, ["/srv/a/releases/r1"]),
    "pyproject-dependencies": ({"pyproject.toml": UV_PYPROJECT}, ["django>=5.2", "gunicorn"]),
}


@pytest.mark.parametrize("shape", PIP_BASED)
def test_pip_and_uv_build_the_same_install_for_each_pip_based_method(shape: str) -> None:
    files, target = PIP_BASED[shape]
    wanted = "r.txt" if shape == "requirements" else ""
    found = project.inspect_project(reader(files), "3.11.2", requirements_file=wanted)
    extra_args = ["--only-binary", ":all:"]
    pip_options = options(extra_args=extra_args, installer="pip")
    uv_options = options(extra_args=extra_args, installer="uv", index_url="https://idx.example/s")
    pip_venv = project.venv_path(found, pip_options)
    uv_venv = project.venv_path(found, uv_options)
    assert pip_venv != uv_venv

    pip_steps = project.install_steps(found, pip_options)
    assert [s["argv"] for s in pip_steps] == [
        [
            *["nice", "-n", "10", f"{pip_venv}/bin/python", "-m", "pip", "install"],
            *["--disable-pip-version-check", "--no-input"],
            *["--cache-dir", "/srv/a/shared/cache/pip", *extra_args, *target],
        ],
        [
            *["nice", "-n", "10", f"{pip_venv}/bin/python", "-m", "pip", "install"],
            *["--disable-pip-version-check", "--no-input"],
            *["--cache-dir", "/srv/a/shared/cache/pip", *extra_args, "gunicorn"],
        ],
    ]
    assert all(s["env"] == {} for s in pip_steps)

    uv_steps = project.install_steps(found, uv_options)
    uv_pip = ["nice", "-n", "10", "/opt/djdeploy/tools/bin/uv", "pip", "install"]
    uv_pip += ["--python", f"{uv_venv}/bin/python"]
    assert [s["argv"] for s in uv_steps] == [
        [*uv_pip, *extra_args, *target],
        [*uv_pip, *extra_args, "gunicorn"],
    ]
    for step in uv_steps:
        assert step["env"] == {
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_LINK_MODE": "copy",
            "UV_NO_PROGRESS": "1",
            "UV_COMPILE_BYTECODE": "1",
            "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
            "UV_CACHE_DIR": "/srv/a/shared/cache/uv",
            "UV_DEFAULT_INDEX": "https://idx.example/s",
        }
    assert project.installer_of(found, uv_options) == "uv"
    assert project.installer_of(found, pip_options) == "pip"


def test_uv_requires_hashes_of_a_hashed_file_but_not_of_the_extra_packages() -> None:
    files = {"requirements.txt": "django==5.2 --hash=sha256:00"}
    found = project.inspect_project(reader(files), "3.11.2")
    first, extra = project.install_steps(found, options(installer="uv"))
    assert first["argv"][-3:] == ["--require-hashes", "-r", "/srv/a/releases/r1/requirements.txt"]
    assert "--require-hashes" not in extra["argv"] and extra["argv"][-1] == "gunicorn"
    plain = project.inspect_project(reader({"requirements.txt": "django\n"}), "3.11.2")
    assert all(
        "--require-hashes" not in s["argv"]
        for s in project.install_steps(plain, options(installer="uv"))
    )


def test_uv_extra_indexes_and_the_ca_bundle_reach_uv_pip() -> None:
    found = project.inspect_project(reader({"requirements.txt": "django\n"}), "3.11.2")
    steps = project.install_steps(
        found,
        options(
            installer="uv",
            extra_index_urls=["https://a.example/s", "https://b.example/s"],
            ca_bundle="/etc/ca.pem",
            nice=3,
        ),
    )
    assert steps[0]["env"]["UV_INDEX"] == "https://a.example/s https://b.example/s"
    assert steps[0]["env"]["SSL_CERT_FILE"] == "/etc/ca.pem"
    assert steps[0]["argv"][:3] == ["nice", "-n", "3"]


@pytest.mark.parametrize(
    ("files", "tool"),
    [
        ({"uv.lock": "x", "pyproject.toml": UV_PYPROJECT}, "uv"),
        ({"poetry.lock": "x"}, "poetry"),
    ],
    ids=["uv.lock", "poetry.lock"],
)
def test_the_installer_does_not_change_a_lock_file_project(
    files: dict[str, str], tool: str
) -> None:
    found = project.inspect_project(reader(files), "3.11.2")
    pip, uv = options(installer="pip"), options(installer="uv")
    assert project.venv_path(found, pip) == project.venv_path(found, uv)
    assert project.install_steps(found, pip) == project.install_steps(found, uv)
    assert project.installer_of(found, uv) == tool


def test_pip_venvs_keep_the_key_they_had_before_the_installer_choice() -> None:
    found = project.inspect_project(reader({"requirements.txt": "django"}), "3.11.2")
    inputs = ["requirements", found.digest, False, "3.11.2", ["gunicorn"], []]
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]
    assert project.venv_path(found, options()) == f"/srv/a/venvs/{key}"


def test_an_unknown_installer_is_a_project_error() -> None:
    found = project.inspect_project(reader({"requirements.txt": "django"}), "3.11.2")
    with pytest.raises(project.ProjectError, match="unknown installer 'conda'"):
        project.venv_path(found, options(installer="conda"))


def test_the_git_reader_shows_each_path_of_the_commit_once() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        if argv[-1] == "c0ffee:uv.lock":
            return 0, "version = 1\n", ""
        return 128, "", "fatal: path 'x' does not exist in 'c0ffee'"

    read = project.git_reader(run, "/srv/a/shared/cache/repo.git", "c0ffee")
    assert read("uv.lock") == "version = 1\n"
    assert read("uv.lock") == "version = 1\n"
    assert read("poetry.lock") is None
    assert read("poetry.lock") is None
    assert calls == [
        ["git", "--git-dir", "/srv/a/shared/cache/repo.git", "show", "c0ffee:uv.lock"],
        ["git", "--git-dir", "/srv/a/shared/cache/repo.git", "show", "c0ffee:poetry.lock"],
    ]


def test_the_interpreter_version_comes_from_the_interpreter() -> None:
    seen: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        seen.append(argv)
        return 0, "3.11.2\n", ""

    assert project.interpreter_version(run, "/usr/bin/python3") == "3.11.2"
    assert seen == [["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"]]


def test_an_interpreter_that_cannot_run_is_a_project_error() -> None:
    with pytest.raises(project.ProjectError, match="cannot run the interpreter /opt/py: boom"):
        project.interpreter_version(lambda argv: (1, "", "boom\n"), "/opt/py")

    def missing(argv: list[str]) -> tuple[int, str, str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(
        project.ProjectError, match=r"cannot run the interpreter /opt/py: .*No such"
    ):
        project.interpreter_version(missing, "/opt/py")
