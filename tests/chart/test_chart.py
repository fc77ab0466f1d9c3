"""`helm lint` and `helm template` of charts/slo-autoscaler with the real helm, and the rendered objects."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_chart
import pytest
import rbac_coverage as rbac
import yaml
from helm_chart import CHART, RELEASE_NAMESPACE, REPO, by_kind, one

from slo_contract import metrics

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "podMonitor": {"enabled": True},
        "prometheus": {
            "url": "https://prometheus.example.svc:9091",
            "bearerToken": {"secretName": "prom-token", "key": "token"},
            "ca": {"secretName": "prom-ca", "key": "ca.crt"},
        },
    },
    "ha": {"replicaCount": 2, "peering": {"enabled": True, "name": "slo-peers"}},
    "ha-namespaced": {
        "replicaCount": 3,
        "peering": {"enabled": True, "name": "slo-peers"},
        "watchNamespaces": ["team-a"],
    },
}

OPERATOR_ENV = {
    "PROMETHEUS_URL",
    "PROMETHEUS_TIMEOUT_SECONDS",
    "WATCH_NAMESPACES",
    "DEFAULT_INTERVAL_SECONDS",
    "METRICS_PORT",
    "HEALTH_PORT",
    "LOG_LEVEL",
    "PEERING_NAME",
    "FIELD_MANAGER",
}


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: helm_chart.template(helm, values) for name, values in VALUE_SETS.items()}


def _container(objects: list[dict[str, Any]]) -> Mapping[str, Any]:
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(objects)["env"]}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_is_clean(helm: Path, tmp_path: Path, value_set: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[value_set]))
    result = helm_chart.run_helm(helm, "lint", "--strict", str(CHART), "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_rendered_kinds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def kinds(name: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for obj in rendered[name]:
            found[obj["kind"]] = found.get(obj["kind"], 0) + 1
        return found

    always = {"ServiceAccount": 1, "Deployment": 1, "Service": 1, "ConfigMap": 1}
    # crds/ holds kopf's two peering CRDs; the InferenceService CRD is a template.
    assert kinds("defaults") == always | {
        "CustomResourceDefinition": 3,
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
    }
    assert kinds("namespaced") == always | {
        "CustomResourceDefinition": 3,
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
        "Role": 2,
        "RoleBinding": 2,
    }
    assert kinds("monitoring")["ServiceMonitor"] == kinds("monitoring")["PodMonitor"] == 1
    assert "ServiceMonitor" not in kinds("defaults")
    assert "PodMonitor" not in kinds("defaults")
    assert kinds("ha")["ClusterKopfPeering"] == 1
    assert kinds("ha")["PodDisruptionBudget"] == 1
    assert kinds("ha-namespaced")["KopfPeering"] == 1
    assert "PodDisruptionBudget" not in kinds("defaults")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    pod = one(rendered[value_set], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace), f"restricted forbids {host_namespace}"
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security.get("privileged", False) is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security["capabilities"].get("add")
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["limits"]["memory"]
    volume_types = {key for volume in pod["volumes"] for key in volume if key != "name"}
    assert volume_types <= {"emptyDir", "secret", "configMap", "projected"}, "restricted allows no hostPath"


def test_probes_use_the_operators_health_endpoint(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = _container(rendered["defaults"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _env(rendered["defaults"])
    assert ports == {"metrics": int(env["METRICS_PORT"]), "health": int(env["HEALTH_PORT"])}
    assert (ports["metrics"], ports["health"]) == (8080, 8081)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_container_runs_the_operator_with_its_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = _container(rendered["defaults"])
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["args"] == ["run"]
    # The UID the operator image runs as (operator/Dockerfile's USER), so files it owns stay readable.
    dockerfile_user = re.search(r"^USER (\d+)", (REPO / "operator" / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user, "operator/Dockerfile sets no numeric USER"
    pod = one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
    assert container["image"] == f"slo-autoscaler/operator:{chart['appVersion']}"
    env = _env(rendered["defaults"])
    assert env.keys() >= OPERATOR_ENV
    assert env["WATCH_NAMESPACES"] == ""
    assert env["PEERING_NAME"] == ""
    assert env["FIELD_MANAGER"] == "slo-autoscaler"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "PROMETHEUS_BEARER_TOKEN_FILE" not in env
    assert _env(rendered["namespaced"])["WATCH_NAMESPACES"] == "team-a,team-b"
    assert _env(rendered["ha"])["PEERING_NAME"] == "slo-peers"
    assert one(rendered["ha"], "Deployment")["spec"]["replicas"] == 2


def test_prometheus_token_and_ca_come_from_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["monitoring"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    env = _env(objects)
    assert env["PROMETHEUS_URL"] == "https://prometheus.example.svc:9091"
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    for env_name, secret, key in (
        ("PROMETHEUS_BEARER_TOKEN_FILE", "prom-token", "token"),
        ("PROMETHEUS_CA_FILE", "prom-ca", "ca.crt"),
    ):
        [volume] = [name for name, secret_name in secrets.items() if secret_name == secret]
        assert env[env_name] == f"{mounts[volume]}/{key}"


def test_monitors_select_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["monitoring"]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # The operator labels its series with the InferenceService's namespace; without honorLabels the
    # scrape would rename it exported_namespace and the dashboard's namespace filter would miss it.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_has_no_wildcards(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    assert list(rbac.wildcard_rules(rendered[value_set])) == []


def test_namespaced_rbac_is_roles_in_the_watched_namespaces(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced"]
    assert {r["metadata"]["namespace"] for r in by_kind(objects, "Role")} == {"team-a", "team-b"}
    assert {b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")} == {"team-a", "team-b"}
    [cluster_role] = by_kind(objects, "ClusterRole")
    cluster_resources = {
        (g, r) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert cluster_resources <= rbac.CLUSTER_SCOPED, (
        "namespaced mode grants namespaced resources only per namespace"
    )
    assert not by_kind(rendered["defaults"], "Role")


def test_peering_rbac_follows_the_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def resources(objects: list[dict[str, Any]]) -> set[str]:
        return {
            r
            for o in objects
            if o["kind"] in {"Role", "ClusterRole"}
            for rule in o["rules"]
            for r in rule["resources"]
        }

    assert "clusterkopfpeerings" in resources(rendered["ha"])
    assert "kopfpeerings" in resources(rendered["ha-namespaced"])
    assert not {"clusterkopfpeerings", "kopfpeerings"} & resources(rendered["defaults"])
    peering = one(rendered["ha-namespaced"], "KopfPeering")
    assert (peering["metadata"]["name"], peering["metadata"]["namespace"]) == ("slo-peers", "team-a")
    crd_names = {c["metadata"]["name"] for c in by_kind(rendered["ha"], "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crd_names


# --- The CRD -----------------------------------------------------------------------------------------
TOP_LEVEL_CRD = REPO / "crds" / "inferenceservice.yaml"
CHART_CRD = CHART / "files" / "crds" / "inferenceservice.yaml"


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    assert TOP_LEVEL_CRD.is_file(), f"{TOP_LEVEL_CRD} is missing: run `make crds`"
    assert CHART_CRD.read_bytes() == TOP_LEVEL_CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(REPO)} differs from {TOP_LEVEL_CRD.relative_to(REPO)}: run `make crds`"
    )


def test_rendered_crd_is_the_generated_crd_kept_on_uninstall(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    generated = yaml.safe_load(CHART_CRD.read_text())
    name = generated["metadata"]["name"]
    [crd] = [
        c for c in by_kind(rendered["defaults"], "CustomResourceDefinition") if c["metadata"]["name"] == name
    ]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    for key in ("annotations", "labels"):
        crd["metadata"].pop(key)
        generated["metadata"].pop(key, None)
    assert crd == generated


def test_crd_can_be_left_to_kubectl(helm: Path) -> None:
    objects = helm_chart.template(helm, {"crds": {"install": False}}, "--skip-crds")
    assert not by_kind(objects, "CustomResourceDefinition")
    kept = helm_chart.template(
        helm, {"crds": {"keep": False, "annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}}}
    )
    [crd] = [
        c for c in by_kind(kept, "CustomResourceDefinition") if c["spec"]["group"] == "slo-autoscaler.io"
    ]
    assert crd["metadata"]["annotations"] == {"argocd.argoproj.io/sync-options": "Prune=false"}


# --- values.schema.json and the template checks -----------------------------------------------------
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 0}, r"at '/replicaCount': minimum: got 0, want 1"),
        ({"logLevel": "LOUD"}, r"at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        (
            {"prometheus": {"url": "prometheus:9090"}},
            r"at '/prometheus/url': 'prometheus:9090' does not match",
        ),
        ({"watchNamespaces": ["Team_A"]}, r"at '/watchNamespaces/0': 'Team_A' does not match"),
        ({"watchNamespaces": "team-a"}, r"at '/watchNamespaces': got string, want array"),
        ({"defaultIntervalSeconds": "30"}, r"at '/defaultIntervalSeconds': got string, want integer"),
        ({"replicas": 2}, r"additional properties 'replicas' not allowed"),
        (
            {"securityContext": {"readOnlyRootFilesystem": False}},
            r"readOnlyRootFilesystem': value must be true",
        ),
        ({"podSecurityContext": {"runAsNonRoot": False}}, r"runAsNonRoot': value must be true"),
        ({"image": {"pullPolicy": "Sometimes"}}, r"at '/image/pullPolicy': value must be one of"),
    ],
)
def test_schema_rejects_a_wrong_value_with_a_clear_message(
    helm: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_chart.HelmFailedError) as failure:
        helm_chart.template(helm, values)
    assert "values don't meet the specifications of the schema" in failure.value.stderr
    assert re.search(message, failure.value.stderr), failure.value.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount > 1 needs peering.enabled=true"),
        ({"watchNamespaces": ["a", "a"]}, "watchNamespaces lists a namespace twice"),
        (
            {"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}},
            "serviceMonitor.enabled=true needs metrics.service.enabled=true",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(
    helm: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_chart.HelmFailedError) as failure:
        helm_chart.template(helm, values)
    assert message in failure.value.stderr


def test_every_value_in_values_yaml_is_in_the_schema() -> None:
    """The schema forbids unknown keys: a key in values.yaml but not in the schema would break installs."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return resolve(schema["$defs"][ref.rsplit("/", 1)[1]]) if ref else node

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            for key, item in value.items():
                assert key in node["properties"], f"values.yaml key {path}.{key} is not in values.schema.json"
                walk(item, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


# --- Grafana dashboard ------------------------------------------------------------------------------
def test_dashboard_is_valid_json_and_queries_contract_metrics(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    [config_map] = by_kind(rendered["defaults"], "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == RELEASE_NAMESPACE
    dashboard = json.loads(config_map["data"]["slo-autoscaler.json"])
    assert dashboard["uid"] == "slo-autoscaler"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 7
    contract_names = {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str)}
    used = {
        name for expr in exprs for name in re.findall(r"\b(model_[a-z_]+?)(?:_bucket|_sum|_count)?\b", expr)
    }
    assert used <= contract_names, (
        f"dashboard queries series the model server does not export: {used - contract_names}"
    )
    assert {metrics.REQUEST_DURATION_SECONDS, metrics.REQUESTS_TOTAL, metrics.MAX_BATCH_SIZE} <= used
    # Per InferenceService: a row repeated over the inferenceservice variable, every query filtered by it.
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "inferenceservice"} <= variables
    assert dashboard["panels"][0]["repeat"] == "inferenceservice"
    per_service = [e for e in exprs if "model_" in e]
    assert all(f'{metrics.INFERENCESERVICE_LABEL}=~"$inferenceservice"' in e for e in per_service)
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("p99", "target", "qps", "replicas", "batch", "decisions"):
        assert topic in titles, f"dashboard has no panel about {topic}"


# A series the dashboard shows before the operator exports it: the P99 panel's target line.
# Listed here so the gap is visible; the test below fails once the operator exports it (drop it then).
PENDING_OPERATOR_SERIES = {"slo_autoscaler_target_p99_seconds"}


def test_dashboard_queries_the_operators_own_metrics(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from prometheus_client import REGISTRY

    from slo_operator import metrics as operator_metrics

    exported = {
        sample_name
        for collector in (
            operator_metrics.DECISIONS,
            operator_metrics.RECONCILE_DURATION,
            operator_metrics.PROMETHEUS_ERRORS,
        )
        for family in collector.describe()
        for sample_name in (family.name, f"{family.name}_total", f"{family.name}_bucket")
    }
    exported |= {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.name.startswith("slo_autoscaler_")
        for suffix in ("", "_total", "_bucket")
    }
    [config_map] = by_kind(rendered["defaults"], "ConfigMap")
    dashboard = json.loads(config_map["data"]["slo-autoscaler.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b(slo_autoscaler_[a-z0-9_]+)", expr)}
    assert used - PENDING_OPERATOR_SERIES <= exported, f"not exported by the operator: {used - exported}"
    assert not PENDING_OPERATOR_SERIES & exported, (
        "the operator exports it now: drop it from PENDING_OPERATOR_SERIES"
    )
    assert "slo_autoscaler_decisions_total" in used


def test_dashboard_can_be_turned_off(helm: Path) -> None:
    assert not by_kind(helm_chart.template(helm, {"grafanaDashboard": {"enabled": False}}), "ConfigMap")


# --- The operator reads what the chart sets ------------------------------------------------------
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_settings_parse_the_rendered_env(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    """The chart's env is fed to the operator's own settings parser: names and values must both fit."""
    from slo_operator import settings
    from slo_operator.settings import OperatorConfig

    env = {k: v for k, v in _env(rendered[value_set]).items() if isinstance(v, str)}
    assert set(env) <= set(settings.ALL), (
        f"the chart sets variables the operator ignores: {set(env) - set(settings.ALL)}"
    )
    values = VALUE_SETS[value_set]
    config = settings.OperatorConfig.from_env(env)
    assert config.watch_namespaces == tuple(values.get("watchNamespaces", ()))
    assert config.peering_name == (values["peering"]["name"] if "peering" in values else None)
    assert config.field_manager == "slo-autoscaler"
    assert (config.metrics_port, config.health_port) == (8080, 8081)
    assert config.log_level == "INFO"
    assert config.default_interval_seconds == OperatorConfig().default_interval_seconds, (
        "same default as the operator"
    )
    if value_set == "monitoring":
        assert set(env) == set(settings.ALL), "with auth set, the chart sets every operator variable"
        assert config.prometheus_bearer_token_file == "/var/run/secrets/slo-autoscaler/prometheus-token/token"
        assert config.prometheus_ca_file == "/var/run/secrets/slo-autoscaler/prometheus-ca/ca.crt"


def test_readme_values_table_lists_every_value() -> None:
    """charts/slo-autoscaler/README.md documents each value; a new one without a row fails here."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values_section = (CHART / "README.md").read_text().split("## Values", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", values_section, flags=re.MULTILINE))

    def keys(node: Any, prefix: str) -> set[str]:
        # Documented at the level of a map of free-form entries (labels, annotations, security contexts).
        if isinstance(node, dict) and node and prefix not in documented:
            return {k for key, item in node.items() for k in keys(item, f"{prefix}.{key}" if prefix else key)}
        return {prefix}

    missing = keys(values, "") - documented
    assert not missing, f"values without a row in the chart README's table: {sorted(missing)}"
    unknown = {key for key in documented if key.split(".")[0] not in values}
    assert not unknown, f"the README documents values that do not exist: {sorted(unknown)}"
