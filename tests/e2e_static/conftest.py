"""The Docker-free checks of the e2e setup: they read the same files ``make e2e`` uses.

The scenario helpers live beside the e2e tests (tests/e2e/e2e_config.py) and are imported by
plain name, so both folders read one definition of the manifests, versions and load Job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_config import CHART_DIR, CHART_VALUES, REPO_ROOT, setting


def helm_binary() -> str:
    """helm from PATH or from .tools/bin (where `make install` puts it); fail, never skip, without it."""
    found = shutil.which("helm") or (
        str(REPO_ROOT / ".tools" / "bin" / "helm")
        if (REPO_ROOT / ".tools" / "bin" / "helm").exists()
        else None
    )
    if found is None:
        pytest.fail("helm is needed to render the chart: `make install` installs it into .tools/bin")
    return found


def e2e_helm_args() -> list[str]:
    """The chart arguments up.sh passes, from the same sources (values-e2e.yaml and versions.env)."""
    repository, _, tag = setting("OPERATOR_IMAGE").rpartition(":")
    return [
        "--namespace",
        setting("OPERATOR_NAMESPACE"),
        "-f",
        str(CHART_VALUES),
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
    ]


@pytest.fixture(scope="session")
def rendered_chart() -> list[dict[str, Any]]:
    """The chart as `helm template` renders it for the e2e cluster."""
    if not (CHART_DIR / "Chart.yaml").exists():
        pytest.fail(f"the chart is missing: {CHART_DIR}/Chart.yaml")
    result = subprocess.run(
        [helm_binary(), "template", setting("HELM_RELEASE"), str(CHART_DIR), *e2e_helm_args()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"helm template failed for the e2e values:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
