"""Inspect a Django project at a commit before it is built (module_utils of the release role).

Reads the files a project ships (uv.lock, poetry.lock, requirements files, pyproject.toml,
.python-version) straight from the git mirror at the release's commit, picks how its
dependencies are installed, checks the host's interpreter against the project's
``requires-python`` and returns the install commands, before anything is exported, installed or
switched. ``library/djdeploy_build.py`` runs it between the mirror and the export (imported as
``ansible.module_utils.djdeploy_project_lib``; Ansible ships a role's module_utils with its
modules).

Plain functions (``inspect_project``, ``satisfies``, ``install_steps``...) that take a file
reader, and readers that run their commands through a runner the caller passes (the build
module runs git as the deploy user, who owns the mirror), so unit tests run them without git,
Ansible or a host. Standard library only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUIREMENTS_CANDIDATES = (
    "requirements.txt",
    "requirements/production.txt",
    "requirements/prod.txt",
    "requirements/base.txt",
)
DEFAULT_KNOBS = {
    "method": "app_install_method",
    "requirements": "app_requirements_file",
    "python": "app_python",
}

Reader = Callable[[str], str | None]
# The methods whose installer is the operator's choice (INSTALLERS); a lock file brings its own
# tool (uv.lock: uv sync, poetry.lock: Poetry).
PIP_METHODS = ("requirements", "pyproject")
INSTALLERS = ("pip", "uv")


class ProjectError(Exception):
    """The project cannot be built on this host; the message says why and what to set."""


@dataclass
class Project:
    method: str
    source: str
    digest: str
    build_system: bool = False
    hashes: bool = False
    dependencies: list[str] = field(default_factory=list)
    requires_python: str = ""
    python_version: str = ""
    warnings: list[str] = field(default_factory=list)


# --- Versions and specifiers ------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """Numeric release part of a version ("3.12.1rc1" -> (3, 12, 1))."""
    parts: list[int] = []
    for piece in text.strip().lstrip("vV").split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def _pad(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def _clause(version: tuple[int, ...], clause: str) -> bool:
    match = re.fullmatch(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)\s*", clause)
    if not match:
        raise ValueError(f"not a version specifier: {clause!r}")
    op, target = match.groups()
    if target.endswith(".*"):
        prefix = parse_version(target[:-2])
        equal = version[: len(prefix)] == prefix
        if op == "==":
            return equal
        if op == "!=":
            return not equal
        raise ValueError(f"a wildcard only goes with == or != (got {clause!r})")
    wanted = parse_version(target)
    mine, other = _pad(version, wanted)
    if op in ("==", "==="):
        return mine == other
    if op == "!=":
        return mine != other
    if op == "<=":
        return mine <= other
    if op == ">=":
        return mine >= other
    if op == "<":
        return mine < other
    if op == ">":
        return mine > other
    # ~=X.Y.Z: >= X.Y.Z and == X.Y.*
    if len(wanted) < 2:
        raise ValueError(f"~= needs at least two version parts (got {clause!r})")
    return mine >= other and version[: len(wanted) - 1] == wanted[:-1]


def _poetry_clause(clause: str) -> list[str]:
    """Poetry's caret, tilde and bare versions as PEP 440 clauses."""
    clause = clause.strip()
    if clause in ("", "*"):
        return []
    if clause.startswith("^"):
        base = parse_version(clause[1:])
        first = next((i for i, part in enumerate(base) if part != 0), len(base) - 1)
        upper = (*base[:first], base[first] + 1)
        return [f">={'.'.join(map(str, base))}", f"<{'.'.join(map(str, upper))}"]
    if clause.startswith("~") and not clause.startswith("~="):
        base = parse_version(clause[1:])
        upper = (base[0] + 1,) if len(base) == 1 else (base[0], base[1] + 1)
        return [f">={'.'.join(map(str, base))}", f"<{'.'.join(map(str, upper))}"]
    if re.match(r"\d", clause):
        return [f"=={clause}"]
    return [clause]


def satisfies(version: str, spec: str) -> bool:
    """Whether a version meets a PEP 440 specifier set, or a Poetry constraint (^, ~, ||)."""
    mine = parse_version(version)
    for alternative in spec.split("||"):
        clauses: list[str] = []
        for piece in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", alternative.strip()):
            clauses.extend(_poetry_clause(piece))
        if all(_clause(mine, clause) for clause in clauses):
            return True
    return False


# --- The project ------------------------------------------------------------------------


def _toml(reader: Reader, path: str) -> dict[str, Any]:
    text = reader(path)
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ProjectError(f"{path} is not valid TOML: {error}") from error


def _digest(reader: Reader, paths: list[str]) -> str:
    sha = hashlib.sha256()
    for path in paths:
        text = reader(path)
        sha.update(f"{path}\0{'' if text is None else text}\0".encode())
    return sha.hexdigest()


def requires_python(reader: Reader) -> tuple[str, str]:
    """The project's Python requirement and the file it comes from ("", "") when none."""
    pyproject = _toml(reader, "pyproject.toml")
    spec = pyproject.get("project", {}).get("requires-python")
    if isinstance(spec, str) and spec.strip():
        return spec.strip(), "requires-python in pyproject.toml"
    poetry = pyproject.get("tool", {}).get("poetry", {}).get("dependencies", {})
    spec = poetry.get("python") if isinstance(poetry, dict) else None
    if isinstance(spec, str) and spec.strip():
        return spec.strip(), "tool.poetry.dependencies.python in pyproject.toml"
    return "", ""


def check_python(
    reader: Reader, python_version: str, python: str, knob: str
) -> tuple[str, list[str]]:
    """Fail when the interpreter cannot run the project; return the requirement and warnings."""
    spec, origin = requires_python(reader)
    warnings: list[str] = []
    ways_out = (
        f"Point {knob} at an interpreter on the hosts that satisfies it (e.g. Debian 13's "
        "/usr/bin/python3 is 3.13, Debian 12's is 3.11), or release a commit whose "
        "requirement this interpreter meets"
    )
    if spec:
        try:
            ok = satisfies(python_version, spec)
        except ValueError as error:
            raise ProjectError(
                f"cannot read the project's Python requirement ({origin}): {error}"
            ) from error
        if not ok:
            raise ProjectError(
                f"the project requires Python {spec} ({origin}) but {python} on this host is "
                f"Python {python_version}. {ways_out}."
            )
    pinned = (reader(".python-version") or "").strip().splitlines()
    wanted = pinned[0].strip() if pinned else ""
    if re.match(r"^\d+(\.\d+)*$", wanted):
        width = min(len(parse_version(wanted)), 2)
        if parse_version(python_version)[:width] < parse_version(wanted)[:width]:
            raise ProjectError(
                f"the project pins Python {wanted} (.python-version) but {python} on this host "
                f"is Python {python_version}. {ways_out}."
            )
        if parse_version(python_version)[:width] != parse_version(wanted)[:width]:
            warnings.append(
                f".python-version asks for {wanted}; the venv is built with {python_version}"
            )
    return spec, warnings


def _requirements(reader: Reader, wanted: str) -> str | None:
    for path in [wanted] if wanted else REQUIREMENTS_CANDIDATES:
        if reader(path) is not None:
            return path
    return None


def inspect_project(
    reader: Reader,
    python_version: str,
    *,
    python: str = "python3",
    method: str = "auto",
    requirements_file: str = "",
    knobs: dict[str, str] | None = None,
) -> Project:
    """Decide how the project at hand installs, and check the interpreter can run it."""
    names = {**DEFAULT_KNOBS, **(knobs or {})}
    pyproject = _toml(reader, "pyproject.toml")
    build_system = "build-system" in pyproject
    deps = pyproject.get("project", {}).get("dependencies", [])
    requirements = _requirements(reader, requirements_file)
    found = {
        "uv": "uv.lock" if reader("uv.lock") is not None else None,
        "poetry": "poetry.lock" if reader("poetry.lock") is not None else None,
        "requirements": requirements,
        "pyproject": "pyproject.toml" if pyproject and (build_system or deps) else None,
    }
    if method == "auto":
        chosen = next((name for name, path in found.items() if path), None)
        tried = requirements_file or " / ".join(REQUIREMENTS_CANDIDATES)
        if chosen is None:
            raise ProjectError(
                "found nothing to install the dependencies from: no uv.lock, poetry.lock, "
                f"{tried}"
                ", nor a pyproject.toml with [build-system] or [project] dependencies at the "
                f"repository root. Add one, or set {names['requirements']} to your requirements "
                "file."
            )
    else:
        chosen = method
        if not found.get(chosen):
            wanted = {
                "uv": "uv.lock",
                "poetry": "poetry.lock",
                "requirements": requirements_file or " / ".join(REQUIREMENTS_CANDIDATES),
                "pyproject": "pyproject.toml with [build-system] or [project] dependencies",
            }[chosen]
            raise ProjectError(
                f"{names['method']} is '{method}' but the repository has no {wanted}. Set "
                f"{names['method']} to auto (or another method), or add the file."
            )
    source = str(found[chosen])
    inputs = {
        "uv": ["uv.lock", "pyproject.toml"],
        "poetry": ["poetry.lock", "pyproject.toml"],
        "requirements": [source],
        "pyproject": ["pyproject.toml"],
    }[chosen]
    hashes = False
    if chosen == "requirements":
        hashes = "--hash" in (reader(source) or "")
    spec, warnings = check_python(reader, python_version, python, names["python"])
    return Project(
        method=chosen,
        source=source,
        digest=_digest(reader, inputs),
        build_system=build_system,
        hashes=hashes,
        dependencies=[str(d) for d in deps] if chosen == "pyproject" and not build_system else [],
        requires_python=spec,
        python_version=python_version,
        warnings=warnings,
    )


# --- The install -----------------------------------------------------------------------


@dataclass(kw_only=True)
class InstallerSettings:
    """The operator's install settings (the inventory's), whoever carries them."""

    tools_dir: str = "/opt/djdeploy/tools"
    extra_packages: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    # Installer of the requirements and pyproject methods (INSTALLERS); the lock-file methods
    # ignore it.
    installer: str = "pip"

    def installer_settings(self) -> dict[str, Any]:
        """These settings alone (copies of the lists), e.g. to build InstallOptions from them."""
        return {
            f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(InstallerSettings)
        }


@dataclass(kw_only=True)
class InstallOptions(InstallerSettings):
    """Where and how the build installs: paths on the host and the operator's settings."""

    venvs_dir: str
    release_dir: str
    cache_dir: str = ""
    nice: int = 10


def installer_of(project: Project, options: InstallOptions) -> str:
    """The tool that fills the venv: uv for uv.lock, Poetry for poetry.lock, else the choice."""
    if project.method in PIP_METHODS:
        if options.installer not in INSTALLERS:
            raise ProjectError(
                f"unknown installer {options.installer!r} (expected one of {', '.join(INSTALLERS)})"
            )
        return options.installer
    return project.method


def venv_path(project: Project, options: InstallOptions) -> str:
    """The venv of these inputs: same lock, interpreter, extras and installer give the same venv.

    pip and uv may resolve the same requirements differently (uv asks the indexes in order,
    pip takes the best version of all of them) and write different metadata, so a venv one of
    them built is never reused for the other. pip's venvs keep the key they had before the
    installer could be chosen (no rebuild on upgrade); the lock-file methods' key has no
    installer (their tool is fixed)."""
    inputs: list[Any] = [
        project.method,
        project.digest,
        project.build_system,
        project.python_version,
        options.extra_packages,
        options.extra_args,
    ]
    installer = installer_of(project, options)
    if project.method in PIP_METHODS and installer != "pip":
        inputs.append(installer)
    key = json.dumps(inputs)
    return f"{options.venvs_dir}/{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _uv_env(options: InstallOptions) -> dict[str, str]:
    """uv's environment: the index, CA bundle and cache the pip side gets from /etc/pip.conf
    and --cache-dir; copies, never links, from the build user's cache into the venv."""
    env = {
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_NO_PROGRESS": "1",
        "SSL_CERT_FILE": options.ca_bundle,
    }
    if options.cache_dir:
        env["UV_CACHE_DIR"] = f"{options.cache_dir}/uv"
    if options.index_url:
        env["UV_DEFAULT_INDEX"] = options.index_url
    if options.extra_index_urls:
        env["UV_INDEX"] = " ".join(options.extra_index_urls)
    return env


def install_steps(project: Project, options: InstallOptions) -> list[dict[str, Any]]:
    """The commands that fill the (already created) venv, as argv lists with environments."""
    venv = venv_path(project, options)
    python = f"{venv}/bin/python"
    nice = ["nice", "-n", str(options.nice)]
    pip = [*nice, python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if options.cache_dir:
        pip += ["--cache-dir", f"{options.cache_dir}/pip"]
    steps: list[dict[str, Any]] = []

    def step(argv: list[str], env: dict[str, str] | None = None) -> None:
        steps.append({"argv": argv, "env": env or {}})

    uv = f"{options.tools_dir}/bin/uv"
    if project.method in PIP_METHODS and installer_of(project, options) == "uv":
        # uv pip install into the venv pip would fill: the same index, extra indexes and CA
        # bundle (pip reads them from /etc/pip.conf), its own cache beside pip's, the operator's
        # pip arguments (uv takes most of pip's install options), and bytecode compiled at
        # install like pip does (the sealed venv is read-only for the app, which could not
        # write its .pyc files).
        env = {**_uv_env(options), "UV_COMPILE_BYTECODE": "1"}
        uv_pip = [*nice, uv, "pip", "install", "--python", python]
        if project.method == "requirements":
            # pip enters hash-checking mode by itself when a line has --hash; uv only checks
            # the hashes given, --require-hashes makes it refuse what has none, like pip.
            hashes = ["--require-hashes"] if project.hashes else []
            source = f"{options.release_dir}/{project.source}"
            step([*uv_pip, *hashes, *options.extra_args, "-r", source], env)
        else:
            target = [options.release_dir] if project.build_system else project.dependencies
            step([*uv_pip, *options.extra_args, *target], env)
        # Apart, like pip's: the hash requirement would refuse unpinned extra packages.
        if options.extra_packages:
            step([*uv_pip, *options.extra_args, *options.extra_packages], env)
        return steps
    if project.method == "requirements":
        step([*pip, *options.extra_args, "-r", f"{options.release_dir}/{project.source}"])
    elif project.method == "pyproject":
        target = [options.release_dir] if project.build_system else project.dependencies
        step([*pip, *options.extra_args, *target])
    elif project.method == "uv":
        env = {"UV_PROJECT_ENVIRONMENT": venv, **_uv_env(options)}
        project_flag = "--no-editable" if project.build_system else "--no-install-project"
        sync = [uv, "sync", "--frozen", "--no-default-groups", project_flag, "--python", python]
        step([*nice, *sync], env)
        if options.extra_packages:
            step([*nice, uv, "pip", "install", "--python", python, *options.extra_packages], env)
        return steps
    elif project.method == "poetry":
        env = {
            "VIRTUAL_ENV": venv,
            "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "POETRY_VIRTUALENVS_CREATE": "false",
            "POETRY_NO_INTERACTION": "1",
            "REQUESTS_CA_BUNDLE": options.ca_bundle,
        }
        if options.cache_dir:
            env["POETRY_CACHE_DIR"] = f"{options.cache_dir}/poetry"
            env["POETRY_CONFIG_DIR"] = f"{options.cache_dir}/poetry-config"
        poetry = f"{options.tools_dir}/bin/poetry"
        step([*nice, poetry, "sync", "--only", "main", "--no-root", "--no-ansi"], env)
    # Separate from the project's install: a hashed requirements file puts pip in
    # hash-checking mode, which extra unpinned packages would break.
    if options.extra_packages:
        step([*pip, *options.extra_args, *options.extra_packages])
    return steps


# --- Reading the commit -------------------------------------------------------------------

# run(argv) -> (rc, stdout, stderr): the caller decides who runs the command, and where.
Run = Callable[[list[str]], tuple[int, str, str]]


def git_reader(run: Run, git_dir: str, commit: str) -> Reader:
    """Read files of one commit from a bare repository (None when the file is absent).

    Each path is read once (the inspection reads pyproject.toml several times)."""
    seen: dict[str, str | None] = {}

    def read(path: str) -> str | None:
        if path not in seen:
            rc, out, _ = run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"])
            seen[path] = out if rc == 0 else None
        return seen[path]

    return read


def interpreter_version(run: Run, python: str) -> str:
    """The version of an interpreter (ProjectError when it cannot run)."""
    try:
        rc, out, err = run([python, "-c", "import platform; print(platform.python_version())"])
    except OSError as error:
        raise ProjectError(f"cannot run the interpreter {python}: {error}") from error
    if rc != 0:
        raise ProjectError(f"cannot run the interpreter {python}: {err.strip()}")
    return out.strip()
