"""docs/gitops.md: its manifests parse, its chart values pass the schema, its names are the real ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_chart
import yaml
from helm_chart import CHART, REPO

from slo_contract import env
from slo_operator.settings import OperatorConfig

DOC = REPO / "docs" / "gitops.md"


def _yaml_blocks() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _yaml_blocks() if d.get("kind") == kind]


def test_field_manager_in_the_doc_is_the_operators() -> None:
    chart_default = yaml.safe_load((CHART / "values.yaml").read_text())["fieldManager"]
    assert chart_default == OperatorConfig().field_manager
    ignores = [
        d["spec"]["ignoreDifferences"] for d in _yaml_blocks() if "ignoreDifferences" in d.get("spec", {})
    ]
    [[deployment_ignore]] = ignores
    assert deployment_ignore["managedFieldsManagers"] == [chart_default]
    assert f'select(.name == "{env.MAX_BATCH_SIZE}")' in DOC.read_text()
    assert f"{chart_default}-children" == OperatorConfig().children_field_manager
    assert f"`{OperatorConfig().children_field_manager}`" in DOC.read_text()


def test_argo_cd_application_installs_this_chart_with_valid_values(helm: Path) -> None:
    [application] = _of_kind("Application")
    source = application["spec"]["source"]
    assert (REPO / source["path"]) == CHART
    objects = helm_chart.template(helm, source["helm"]["valuesObject"])
    [crd] = [
        o
        for o in objects
        if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "slo-autoscaler.io"
    ]
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"


def test_flux_helm_release_installs_this_chart_with_valid_values(helm: Path) -> None:
    [release] = _of_kind("HelmRelease")
    assert (REPO / release["spec"]["chart"]["spec"]["chart"]) == CHART
    [repository] = _of_kind("GitRepository")
    assert release["spec"]["chart"]["spec"]["sourceRef"]["name"] == repository["metadata"]["name"]
    assert helm_chart.template(helm, release["spec"]["values"])
