"""The Dockerfiles up.sh builds start what the packages really provide, as the e2e cluster runs them.

Parsed, not built (no Docker here): the final stage's ENTRYPOINT/CMD must be ``python -m <module>``
for a module that exists with a ``__main__`` and a ``main``; the operator's CLI must accept the
``run`` the chart passes; the user must be numeric and non-root (the pods set ``runAsNonRoot``,
which the kubelet can only verify for a numeric user); COPY sources must exist in the build context.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_config import INFERENCESERVICE_MANIFEST, LOAD_JOB_MANIFEST, REPO_ROOT, load_single

from slo_contract import env as contract_env

OPERATOR_DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
MODEL_SERVER_DOCKERFILE = REPO_ROOT / "model_server" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse_dockerfile(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage, continuation lines joined and comments dropped."""
    if not path.exists():
        pytest.fail(f"{path.relative_to(REPO_ROOT)} is missing: up.sh builds the e2e image from it")
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if not stages:
            continue  # ARG before the first FROM
        stages[-1].append(Instruction(keyword.upper(), arguments.strip()))
    assert stages, f"{path} has no FROM"
    return stages


def last(stage: list[Instruction], keyword: str) -> Instruction | None:
    found = [i for i in stage if i.keyword == keyword]
    return found[-1] if found else None


def exec_form(instruction: Instruction | None) -> list[str]:
    if instruction is None:
        return []
    text = instruction.arguments
    if text.startswith("["):
        value = json.loads(text)
        assert isinstance(value, list), text
        return [str(v) for v in value]
    return shlex.split(text)


def start_command(path: Path) -> list[str]:
    final = parse_dockerfile(path)[-1]
    return exec_form(last(final, "ENTRYPOINT")) + exec_form(last(final, "CMD"))


def python_module(command: list[str], path: Path) -> str:
    """The module of a ``python -m module`` start command, with a clear failure otherwise."""
    assert len(command) >= 3, f"{path.name} starts {command}, not python -m <module>"
    assert Path(command[0]).name.startswith("python"), f"{path.name} starts {command}, not python"
    assert command[1] == "-m", f"{path.name} starts {command}, not python -m <module>"
    return command[2]


@pytest.mark.parametrize(
    ("dockerfile", "module"),
    [(OPERATOR_DOCKERFILE, "slo_operator"), (MODEL_SERVER_DOCKERFILE, "model_server")],
    ids=["operator", "model_server"],
)
def test_image_starts_the_packages_real_entry_point(dockerfile: Path, module: str) -> None:
    assert python_module(start_command(dockerfile), dockerfile) == module
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
    entry = importlib.import_module(f"{module}.__main__")
    assert callable(getattr(entry, "main", None)), f"{module}.__main__ has no main() (its console script)"


def test_operator_entry_point_accepts_the_run_command_the_chart_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slo_operator", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage:" in result.stdout.lower(), f"`run --help` printed no usage:\n{result.stdout}"


def test_load_job_uses_the_model_server_images_python() -> None:
    [container] = load_single(LOAD_JOB_MANIFEST)["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == start_command(MODEL_SERVER_DOCKERFILE)[0]


@pytest.mark.parametrize(
    "dockerfile", [OPERATOR_DOCKERFILE, MODEL_SERVER_DOCKERFILE], ids=["operator", "model_server"]
)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    user = last(parse_dockerfile(dockerfile)[-1], "USER")
    assert user is not None, f"{dockerfile.name}: the final stage sets no USER (it would run as root)"
    uid = user.arguments.split(":")[0]
    assert uid.isdigit(), f"{dockerfile.name}: USER {uid} must be numeric for Kubernetes' runAsNonRoot check"
    assert int(uid) != 0


@pytest.mark.parametrize(
    "dockerfile", [OPERATOR_DOCKERFILE, MODEL_SERVER_DOCKERFILE], ids=["operator", "model_server"]
)
def test_copy_sources_exist_in_the_build_context(dockerfile: Path) -> None:
    """up.sh builds with the repository root as context."""
    for stage in parse_dockerfile(dockerfile):
        for instruction in stage:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            text = instruction.arguments
            words = [str(w) for w in json.loads(text)] if text.startswith("[") else shlex.split(text)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not from the context
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                matches = list(REPO_ROOT.glob(source.lstrip("/")))
                assert matches, f"{dockerfile.name}: COPY {source} matches nothing in the repository"


def test_model_server_image_exposes_the_port_the_operator_configures() -> None:
    final = parse_dockerfile(MODEL_SERVER_DOCKERFILE)[-1]
    exposed = {word.split("/")[0] for i in final if i.keyword == "EXPOSE" for word in i.arguments.split()}
    port = load_single(INFERENCESERVICE_MANIFEST)["spec"]["model"].get("port", 8080)
    assert str(port) in exposed, f"EXPOSE {exposed}; the operator sets {contract_env.PORT}={port}"


def test_operator_image_installs_no_torch() -> None:
    """The operator image stays small: it copies and installs the contract and the operator, never the
    model server or torch (constraints files only pin versions; they install nothing)."""
    for stage in parse_dockerfile(OPERATOR_DOCKERFILE):
        for instruction in stage:
            if instruction.keyword in ("COPY", "ADD"):
                assert "model_server" not in instruction.arguments, instruction
            if instruction.keyword == "RUN":
                for command in re.split(r"&&|;|\|\|", instruction.arguments):
                    if "pip install" in command:
                        assert "model_server" not in command, command
                        assert "torch" not in command.lower(), command
