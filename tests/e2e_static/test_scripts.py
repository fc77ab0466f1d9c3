"""up.sh, down.sh and install-tools.sh: valid bash, and without Docker or kind up.sh says what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_config import E2E_DIR, REPO_ROOT, setting

SCRIPTS = ["up.sh", "down.sh", "install-tools.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_executable_bash_with_strict_mode(script: str) -> None:
    path = E2E_DIR / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    result = subprocess.run(
        ["bash", "-n", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def sandbox_path(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH holding only what up.sh's checks use, plus the given fake tools (name -> bash body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname", "date", "awk", "grep", "cat", "sed"):
        real = shutil.which(name)
        assert real is not None
        (bin_dir / name).symlink_to(real)
    for name, body in tools.items():
        fake = bin_dir / name
        fake.write_text(f"#!/bin/bash\n{body}\n")
        fake.chmod(0o755)
    return str(bin_dir)


def run_up(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """up.sh from a copy of tests/e2e (so the repo's .tools/bin, where helm lives, is not on its PATH)."""
    copy = tmp_path / "repo" / "tests" / "e2e"
    shutil.copytree(E2E_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(copy / "up.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": sandbox_path(tmp_path, tools), "HOME": str(tmp_path)},
    )


def test_up_without_any_tool_names_each_missing_one_and_touches_nothing(tmp_path: Path) -> None:
    result = run_up(tmp_path, {})
    assert result.returncode == 1
    assert "missing:" in result.stderr
    for tool in ("docker", f"kind {setting('KIND_VERSION')}", "kubectl", "helm"):
        assert f"  - {tool}" in result.stderr, f"{tool} not named in:\n{result.stderr}"
    assert "install-tools.sh" in result.stderr, "the message should say how to install the tools"
    assert "creating kind cluster" not in result.stdout


def test_up_with_a_docker_cli_but_no_daemon_says_the_daemon_is_unreachable(tmp_path: Path) -> None:
    result = run_up(tmp_path, {"docker": 'echo "Cannot connect to the Docker daemon" >&2; exit 1'})
    assert result.returncode == 1
    assert "cannot reach a Docker daemon" in result.stderr
    assert "  - kind" in result.stderr


def test_up_goes_on_when_every_tool_is_there(tmp_path: Path) -> None:
    """Fake tools that answer the checks: up.sh passes them and fails later, at the first real step."""
    kind_version = setting("KIND_VERSION")
    result = run_up(
        tmp_path,
        {
            "docker": "exit 0",
            "kind": f'[ "$1" = version ] && echo "kind {kind_version} go linux/amd64" && exit 0; exit 3',
            "kubectl": "exit 0",
            "helm": f"echo {setting('HELM_VERSION')}",
        },
    )
    assert "missing:" not in result.stderr
    assert "warning" not in result.stdout, result.stdout
    assert f"creating kind cluster {setting('KIND_CLUSTER_NAME')}" in result.stdout
    assert result.returncode != 0, "the fake kind cannot create a cluster"


def test_down_without_kind_says_so_and_succeeds(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "tests" / "e2e"
    shutil.copytree(E2E_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(copy / "down.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": sandbox_path(tmp_path, {}), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0
    assert "kind is not on PATH" in result.stderr


def test_makefile_targets_run_these_scripts() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "tests/e2e/up.sh" in makefile
    assert "tests/e2e/down.sh" in makefile
    assert "pytest tests/e2e --e2e" in makefile


def test_up_installs_the_chart_with_the_values_the_static_checks_render() -> None:
    text = (E2E_DIR / "up.sh").read_text()
    assert '-f "$HERE/values-e2e.yaml"' in text
    assert '--set "image.repository=${OPERATOR_IMAGE%:*}" --set "image.tag=${OPERATOR_IMAGE##*:}"' in text
    assert "apply --server-side --force-conflicts -f crds/" in text
    assert (
        'kind load docker-image --name "$KIND_CLUSTER_NAME" "$OPERATOR_IMAGE" "$MODEL_SERVER_IMAGE"' in text
    )
    assert "-f operator/Dockerfile" in text
    assert "-f model_server/Dockerfile" in text


def fake_tools(dest: Path, kind: str, kubectl: str, helm: str) -> None:
    """Stand-ins that answer the version queries install-tools.sh makes (no network here)."""
    dest.mkdir(parents=True, exist_ok=True)
    bodies = {
        "kind": f'echo "kind {kind} go1.24 linux/amd64"',
        "kubectl": f'echo \'{{"clientVersion": {{"gitVersion": "{kubectl}"}}}}\'',
        "helm": f"echo {helm}",
    }
    for name, body in bodies.items():
        (dest / name).write_text(f"#!/bin/bash\n{body}\n")
        (dest / name).chmod(0o755)


def test_install_tools_is_silent_when_every_pinned_version_is_there(tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    fake_tools(dest, setting("KIND_VERSION"), setting("KUBECTL_VERSION"), setting("HELM_VERSION"))
    result = subprocess.run(
        ["bash", str(E2E_DIR / "install-tools.sh"), str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_install_tools_downloads_the_pinned_release_when_a_version_differs(tmp_path: Path) -> None:
    """A fake curl records the URL and fails: the URL must be the pinned kind release's."""
    dest = tmp_path / "bin"
    fake_tools(dest, "v0.0.1", setting("KUBECTL_VERSION"), setting("HELM_VERSION"))
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    (fake_bin / "curl").write_text('#!/bin/bash\necho "$@" >> "$CURL_LOG"\nexit 22\n')
    (fake_bin / "curl").chmod(0o755)
    log = tmp_path / "curl.log"
    result = subprocess.run(
        ["bash", str(E2E_DIR / "install-tools.sh"), str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "CURL_LOG": str(log)},
    )
    assert result.returncode == 1
    kind_url = f"https://github.com/kubernetes-sigs/kind/releases/download/{setting('KIND_VERSION')}/kind-"
    assert kind_url in log.read_text()
    assert f"download failed: {kind_url}" in result.stderr
