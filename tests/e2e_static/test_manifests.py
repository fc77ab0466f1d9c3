"""The e2e manifests and the chart as rendered for e2e: kinds, labels, selectors, images, wiring."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
import yaml
from e2e_config import (
    CHART_VALUES,
    E2E_DIR,
    KIND_CONFIG,
    load_documents,
    load_single,
    prometheus_documents,
    setting,
)


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d.get("kind") == kind]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("path", sorted(E2E_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_e2e_manifest_parses_into_objects_with_a_kind(path: Any) -> None:
    documents = load_documents(path)
    assert documents, f"{path.name} is empty"
    if path == CHART_VALUES:
        return
    for doc in documents:
        assert doc.get("kind"), f"{path.name}: a document without kind"
        assert doc.get("apiVersion"), f"{path.name}: a document without apiVersion"


def test_kind_config_is_one_node_and_leaves_the_image_to_versions_env() -> None:
    config = load_single(KIND_CONFIG)
    assert (config["apiVersion"], config["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]
    assert all("image" not in node for node in config["nodes"]), "the node image is pinned in versions.env"
    assert "name" not in config, "the cluster name comes from versions.env (up.sh passes --name)"


def test_kind_node_is_new_enough_for_the_operators_pre_stop_sleep() -> None:
    """The operator's Deployment drains with a ``preStop.sleep`` hook, on by default since Kubernetes 1.30."""
    match = re.search(r":v1\.(\d+)\.", setting("KIND_NODE_IMAGE"))
    assert match is not None
    assert int(match[1]) >= 30


def test_prometheus_manifest_has_the_objects_pod_discovery_needs() -> None:
    documents = prometheus_documents()
    kinds = Counter(d["kind"] for d in documents)
    assert kinds == Counter(
        {
            "Namespace": 1,
            "ServiceAccount": 1,
            "ClusterRole": 1,
            "ClusterRoleBinding": 1,
            "ConfigMap": 1,
            "Deployment": 1,
            "Service": 1,
        }
    )
    namespace = setting("MONITORING_NAMESPACE")
    assert by_kind(documents, "Namespace")[0]["metadata"]["name"] == namespace
    for doc in documents:
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == namespace, f"{doc['kind']} outside {namespace}"


def test_prometheus_deployment_service_and_config_are_wired_together() -> None:
    documents = prometheus_documents()
    [deployment] = by_kind(documents, "Deployment")
    [service] = by_kind(documents, "Service")
    [config_map] = by_kind(documents, "ConfigMap")
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    [container] = template["spec"]["containers"]
    assert container["image"] == setting("PROMETHEUS_IMAGE")
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    config_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/prometheus")
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in container["args"]
    assert "prometheus.yml" in config_map["data"]


def test_prometheus_manifest_leaves_no_placeholder_after_substitution() -> None:
    assert "${" not in yaml.safe_dump_all(prometheus_documents())


def test_chart_values_point_the_operator_at_the_e2e_prometheus_and_namespace() -> None:
    values = load_single(CHART_VALUES)
    [service] = by_kind(prometheus_documents(), "Service")
    [port] = service["spec"]["ports"]
    expected = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port['port']}"
    assert values["prometheus"]["url"] == expected
    assert values["watchNamespaces"] == [setting("E2E_NAMESPACE")]
    assert values["image"]["pullPolicy"] in ("Never", "IfNotPresent")
    assert values["crds"]["install"] is False, "up.sh applies crds/ itself (kubectl apply -f crds/)"
    assert "repository" not in values["image"], "the image comes from versions.env via up.sh's --set"


# --- the chart as rendered for e2e ----------------------------------------------------------------------


def operator_deployment(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = by_kind(rendered, "Deployment")
    return deployment


def test_rendered_chart_has_the_operator_and_namespaced_rbac(rendered_chart: list[dict[str, Any]]) -> None:
    kinds = Counter(d["kind"] for d in rendered_chart)
    assert kinds["Deployment"] == 1
    assert kinds["ServiceAccount"] == 1
    assert "CustomResourceDefinition" not in kinds, "crds.install=false: up.sh applies crds/"
    roles = [
        r for r in by_kind(rendered_chart, "Role") if r["metadata"]["namespace"] == setting("E2E_NAMESPACE")
    ]
    assert roles, f"no Role in the watched namespace {setting('E2E_NAMESPACE')}"
    bindings = by_kind(rendered_chart, "RoleBinding")
    [account] = by_kind(rendered_chart, "ServiceAccount")
    assert any(
        b["metadata"]["namespace"] == setting("E2E_NAMESPACE")
        and {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": setting("OPERATOR_NAMESPACE"),
        }
        in b["subjects"]
        for b in bindings
    ), "no RoleBinding grants the operator's ServiceAccount its Role in the watched namespace"
    for doc in rendered_chart:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            assert doc["metadata"].get("namespace") in (None, setting("OPERATOR_NAMESPACE")), doc["metadata"]


def test_rendered_operator_runs_the_loaded_local_image(rendered_chart: list[dict[str, Any]]) -> None:
    pod = operator_deployment(rendered_chart)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == setting("OPERATOR_IMAGE")
    assert container["imagePullPolicy"] in ("Never", "IfNotPresent")
    assert container["args"][0] == "run", "the image's ENTRYPOINT is python -m slo_operator; `run` starts it"
    assert "command" not in container, "the chart must keep the image's ENTRYPOINT"


def test_rendered_operator_reads_the_e2e_prometheus_and_watches_the_e2e_namespace(
    rendered_chart: list[dict[str, Any]],
) -> None:
    [container] = operator_deployment(rendered_chart)["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    assert env["PROMETHEUS_URL"] == load_single(CHART_VALUES)["prometheus"]["url"]
    assert env["WATCH_NAMESPACES"] == setting("E2E_NAMESPACE")


def test_rendered_operator_selector_matches_its_pods_and_up_sh_finds_it(
    rendered_chart: list[dict[str, Any]],
) -> None:
    deployment = operator_deployment(rendered_chart)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    # up.sh restarts and waits for the operator by this label after loading a rebuilt image.
    assert deployment["metadata"]["labels"]["app.kubernetes.io/instance"] == setting("HELM_RELEASE")
    assert labels["app.kubernetes.io/instance"] == setting("HELM_RELEASE")
    for service in by_kind(rendered_chart, "Service"):
        assert selects(service["spec"]["selector"], labels), (
            f"Service {service['metadata']['name']} selects nothing"
        )
    [account] = by_kind(rendered_chart, "ServiceAccount")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
