"""The GitHub Actions workflows parse, use only well-known actions pinned to a major version, and run
what the issue asks: lint, type check and `make test` in ci.yml; `make e2e` with artifacts in e2e.yml."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_config import ARTIFACTS_DIR, REPO_ROOT, VERSIONS

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
WELL_KNOWN_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}


def load_workflow(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(workflow, dict), f"{name} is not a mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def runs(workflow: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(workflow))


@pytest.mark.parametrize("name", ["ci.yml", "e2e.yml"])
def test_workflow_has_triggers_jobs_and_bounded_runs(name: str) -> None:
    workflow = load_workflow(name)
    assert workflow["name"]
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest"
        assert 0 < job["timeout-minutes"] <= 90, f"{job_name} needs a timeout"
        assert job["steps"], f"{job_name} has no steps"


@pytest.mark.parametrize("name", ["ci.yml", "e2e.yml"])
def test_workflow_uses_only_well_known_actions_pinned_to_a_major_version(name: str) -> None:
    for step in steps(load_workflow(name)):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        assert action in WELL_KNOWN_ACTIONS, f"{name}: {action} is not one of {sorted(WELL_KNOWN_ACTIONS)}"
        assert re.fullmatch(r"v\d+", ref), f"{name}: {step['uses']} must pin a major version (@vN)"


@pytest.mark.parametrize("name", ["ci.yml", "e2e.yml"])
def test_workflow_sets_up_python_3_11(name: str) -> None:
    [setup] = [
        s for s in steps(load_workflow(name)) if str(s.get("uses", "")).startswith("actions/setup-python")
    ]
    assert setup["with"]["python-version"] == "3.11"


@pytest.mark.parametrize("name", ["ci.yml", "e2e.yml"])
def test_workflow_shell_steps_are_valid_bash(name: str, tmp_path: Path) -> None:
    for index, step in enumerate(steps(load_workflow(name))):
        if "run" not in step:
            continue
        script = tmp_path / f"step{index}.sh"
        script.write_text(str(step["run"]))
        result = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"{name} step {step.get('name', index)}: {result.stderr}"


def test_ci_runs_lint_type_check_and_make_test() -> None:
    commands = runs(load_workflow("ci.yml")).split("\n")
    assert "make lint" in commands, "make lint runs ruff, mypy --strict and import-linter"
    assert "make test" in commands
    assert commands.index("make lint") < commands.index("make test")


def test_e2e_runs_make_e2e_with_the_pinned_tools_and_uploads_artifacts_on_failure() -> None:
    workflow = load_workflow("e2e.yml")
    commands = runs(workflow)
    assert "make e2e" in commands.split("\n")
    assert commands.index("tests/e2e/install-tools.sh") < commands.index("make e2e")
    [upload] = [s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload["if"] == "failure()"
    assert Path(REPO_ROOT / upload["with"]["path"]).resolve() == ARTIFACTS_DIR.resolve()


def test_e2e_workflow_exports_exactly_the_settings_python_reads(tmp_path: Path) -> None:
    """Run the workflow's own step that appends versions.env to $GITHUB_ENV, and compare."""
    [step] = [s for s in steps(load_workflow("e2e.yml")) if "GITHUB_ENV" in str(s.get("run", ""))]
    github_env = tmp_path / "github_env"
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=REPO_ROOT,
        env={"GITHUB_ENV": str(github_env), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
    assert exported == VERSIONS
