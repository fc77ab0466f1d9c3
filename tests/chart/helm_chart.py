"""Runs the real helm binary on the chart: lint and template, rendered objects as dicts."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slo-autoscaler"
RELEASE = "slo"
RELEASE_NAMESPACE = "slo-system"
HELM_TIMEOUT_S = 60


class HelmMissingError(RuntimeError):
    pass


class HelmFailedError(RuntimeError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.stderr = result.stderr
        super().__init__(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
        )


def find_helm() -> Path:
    """helm on PATH, else the one `make install` puts in .tools/bin."""
    for candidate in (shutil.which("helm"), REPO / ".tools" / "bin" / "helm"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise HelmMissingError(
        "no helm binary: not on PATH and not at .tools/bin/helm. "
        "Run `make install` (it runs scripts/install-helm.sh .tools/bin)."
    )


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # An empty, private HOME/XDG dir keeps the user's repositories and plugins out of the test.
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "XDG_CACHE_HOME": f"{home}/cache",
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_DATA_HOME": f"{home}/data",
        }
        result = subprocess.run(
            [str(helm), *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_S, env=env, check=False
        )
    if result.returncode != 0:
        raise HelmFailedError(args, result)
    return result


def template(helm: Path, values: Mapping[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    """`helm template` with ``values`` (a values file, so types survive), parsed into objects."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as values_file:
        yaml.safe_dump(dict(values or {}), values_file)
        values_file.flush()
        result = run_helm(
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            *(() if "--skip-crds" in extra else ("--include-crds",)),
            "--values",
            values_file.name,
            *extra,
        )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]
