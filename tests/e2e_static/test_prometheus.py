"""The e2e Prometheus finds every InferenceService pod and labels its series the way the operator queries.

The relabelling is checked by the real Prometheus binary (Debian's, installed by `make install`):
the scrape config from tests/e2e/prometheus.yaml runs unchanged except that its pod discovery is
replaced by a file of targets carrying the same ``__meta_kubernetes_*`` labels Kubernetes discovery
would attach, for a pod built by the operator's own Deployment builder. No cluster is needed.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_config import (
    AUTO_SERVICE,
    inference_service,
    prometheus_documents,
    prometheus_scrape_config,
    setting,
)

from slo_contract.metrics import (
    INFERENCESERVICE_LABEL,
    INFERENCESERVICE_POD_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
)
from slo_operator import api, kube


def meta_label(pod_label: str) -> str:
    """Kubernetes SD's name for a pod label: every character outside [a-zA-Z0-9_] becomes ``_``."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def relabel_rules() -> list[dict[str, Any]]:
    [job] = prometheus_scrape_config()["scrape_configs"]
    rules: list[dict[str, Any]] = job["relabel_configs"]
    return rules


def test_scrape_job_discovers_pods_and_keeps_only_inferenceservice_pods() -> None:
    [job] = prometheus_scrape_config()["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = [r for r in relabel_rules() if r.get("action") == "keep"]
    assert {
        "source_labels": [meta_label(INFERENCESERVICE_POD_LABEL)],
        "regex": ".+",
        "action": "keep",
    } in keeps


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (meta_label(INFERENCESERVICE_POD_LABEL), INFERENCESERVICE_LABEL),
        ("__meta_kubernetes_namespace", NAMESPACE_LABEL),
        ("__meta_kubernetes_pod_name", POD_LABEL),
    ],
)
def test_relabelling_maps_the_contract_labels(source: str, target: str) -> None:
    replaces = [
        r
        for r in relabel_rules()
        if r.get("action", "replace") == "replace" and r.get("target_label") == target
    ]
    assert len(replaces) == 1, f"expected one rule writing {target}, found {replaces}"
    assert replaces[0]["source_labels"] == [source]


def with_file_discovery(config: dict[str, Any], targets_file: Path) -> dict[str, Any]:
    """The scrape config with pod discovery swapped for a targets file, all else (relabelling) unchanged.

    Debian's Prometheus is built without Kubernetes discovery, so it cannot load
    ``kubernetes_sd_configs`` at all; the pod discovery block itself is checked structurally above.
    """
    changed = copy.deepcopy(config)
    [job] = changed["scrape_configs"]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(targets_file)]}]
    return changed


def test_promtool_accepts_the_relabelling(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: `make install` installs Debian's prometheus package, which ships it"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(with_file_discovery(prometheus_scrape_config(), tmp_path / "targets.json"))
    )
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rbac_allows_pod_discovery_and_nothing_else() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in prometheus_documents()}
    [role] = [d for (kind, _), d in docs.items() if kind == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    [binding] = [d for (kind, _), d in docs.items() if kind == "ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    deployment = docs[("Deployment", "prometheus")]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": setting("MONITORING_NAMESPACE")}
    ]
    assert ("ServiceAccount", account) in docs


# --- the real Prometheus ---------------------------------------------------------------------------


def e2e_pod_meta_labels(pod_name: str, phase: str = "Running", init: bool = False) -> dict[str, str]:
    """The discovery labels of one pod of the e2e InferenceService, built by the operator's own builder."""
    manifest = inference_service(AUTO_SERVICE, "Auto")
    spec = api.InferenceServiceSpec.model_validate(manifest["spec"])
    deployment = kube.build_deployment(
        AUTO_SERVICE, setting("E2E_NAMESPACE"), spec, replicas=1, max_batch_size=4
    )
    template = deployment["spec"]["template"]
    [container] = template["spec"]["containers"]
    [port] = container["ports"]
    labels = {meta_label(key): value for key, value in template["metadata"]["labels"].items()}
    labels |= {
        f"__meta_kubernetes_pod_labelpresent_{k[len('__meta_kubernetes_pod_label_') :]}": "true"
        for k in labels
    }
    return labels | {
        "__meta_kubernetes_namespace": setting("E2E_NAMESPACE"),
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_init": "true" if init else "false",
        "__meta_kubernetes_pod_container_port_name": port["name"],
        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
        "__meta_kubernetes_pod_container_port_protocol": port["protocol"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def prometheus_with_e2e_relabelling(tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus on a loopback port, running the e2e scrape job over file-discovered pods."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: `make install` installs Debian's prometheus package")
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: only discovery and relabelling are checked
    unlabelled = {k: v for k, v in e2e_pod_meta_labels("prometheus-0").items() if "inferenceservice" not in k}
    groups = [
        {"targets": [closed], "labels": e2e_pod_meta_labels(f"{AUTO_SERVICE}-running")},
        {"targets": [closed], "labels": e2e_pod_meta_labels(f"{AUTO_SERVICE}-pending", phase="Pending")},
        {"targets": [closed], "labels": e2e_pod_meta_labels(f"{AUTO_SERVICE}-init", init=True)},
        {"targets": [closed], "labels": unlabelled},
    ]
    (tmp_path / "targets.json").write_text(json.dumps(groups))
    config = with_file_discovery(prometheus_scrape_config(), tmp_path / "targets.json")
    config["global"]["scrape_interval"] = "1m"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://{address}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_real_prometheus_labels_the_operators_pods_with_inferenceservice_and_namespace(
    prometheus_with_e2e_relabelling: str,
) -> None:
    url = prometheus_with_e2e_relabelling
    deadline = time.monotonic() + 40
    targets: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            targets = get_json(f"{url}/api/v1/targets?state=any")["data"]
        except OSError:
            targets = {}
        if targets.get("activeTargets") and len(targets.get("droppedTargets", [])) >= 3:
            break
        time.sleep(0.5)
    active = targets.get("activeTargets", [])
    assert len(active) == 1, f"expected only the running pod as a target, got {active}; dropped {targets}"
    labels = active[0]["labels"]
    assert labels[INFERENCESERVICE_LABEL] == AUTO_SERVICE
    assert labels[NAMESPACE_LABEL] == setting("E2E_NAMESPACE")
    assert labels[POD_LABEL] == f"{AUTO_SERVICE}-running"
    dropped = {t["discoveredLabels"].get("__meta_kubernetes_pod_name") for t in targets["droppedTargets"]}
    assert dropped == {f"{AUTO_SERVICE}-pending", f"{AUTO_SERVICE}-init", "prometheus-0"}
