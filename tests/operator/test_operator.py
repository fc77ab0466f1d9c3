"""The real operator (kopf + our handlers) against kmock's Kubernetes emulator.

kmock merges writes naively (no server-side-apply semantics, no status subresource, no garbage
collection), so these tests assert on the requests the operator sends (method, path, content
type, field manager, body) as well as on the stored objects. The metrics come from a scripted
reader (see conftest) except where the real ``PrometheusReader`` is the point.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kmock import ResourceInfo as kmock_resource
from prometheus_client import REGISTRY

from slo_contract import env as server_env
from slo_contract import metrics as m
from slo_operator import api
from slo_operator.prometheus import PrometheusReader

from .conftest import (
    NAMESPACE,
    PROMETHEUS_WINDOW_S,
    Cluster,
    ScriptedReader,
    busy_figures,
    eventually,
    free_port,
    isvc_manifest,
)

DEPLOYMENT_PATH = rf"^/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
APPLY = "application/apply-patch+yaml"


def scaling_writes(cluster: Cluster, name: str = "svc") -> list[Any]:
    """The scaler's server-side applies to the Deployment (not the template applies)."""
    return [
        r
        for r in cluster.writes(rf"{DEPLOYMENT_PATH}/{name}$", "PATCH")
        if r.params.get("fieldManager") == "slo-autoscaler"
    ]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


async def test_create_makes_owned_deployment_and_service(cluster: Cluster, run_operator: Any) -> None:
    manifest = isvc_manifest("svc")
    manifest["metadata"]["labels"] = {"team": "search", "app.kubernetes.io/instance": "argocd-app"}
    await cluster.create_isvc(manifest)
    await run_operator(ScriptedReader(figures=None))

    deployment = await eventually(lambda: cluster.get("apps/v1/deployments", "svc"), what="Deployment")
    service = await eventually(lambda: cluster.get("v1/services", "svc"), what="Service")

    create, *_ = cluster.writes(rf"{DEPLOYMENT_PATH}$", "POST")
    assert create.params["fieldManager"] == "slo-autoscaler-children"
    assert (
        "annotations" in deployment["metadata"]
    )  # the template hash: unchanged templates are not re-applied
    template_applies = [
        r for r in cluster.writes(rf"{DEPLOYMENT_PATH}/svc$", "PATCH") if r.headers["Content-Type"] == APPLY
    ]
    assert template_applies == []
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-svc"
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == api.KIND
    assert deployment["metadata"]["labels"]["team"] == "search"  # kopf.adopt copies the owner's labels...
    assert "app.kubernetes.io/instance" not in deployment["metadata"]["labels"]  # ...but not GitOps tracking
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"] == {m.INFERENCESERVICE_POD_LABEL: "svc"}
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"][m.INFERENCESERVICE_POD_LABEL] == "svc"
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] == 30 + 5  # drain time after the pre-stop pause
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(deployment)[server_env.MAX_BATCH_SIZE] == "32"
    assert env_of(deployment)[server_env.MODEL] == "mlp"
    assert service["spec"]["selector"] == {m.INFERENCESERVICE_POD_LABEL: "svc"}
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-svc"
    # The InferenceService's spec is never written, only its status.
    isvc_writes = cluster.writes(rf"/{api.PLURAL}/svc$", "PATCH")
    assert all("spec" not in (r.data or {}) for r in isvc_writes)


async def test_metrics_drive_one_scaling_write_status_and_events(cluster: Cluster, run_operator: Any) -> None:
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(reader)

    (write, *_) = await eventually(lambda: scaling_writes(cluster), what="a scaling write")
    assert write.headers["Content-Type"] == APPLY
    assert write.params["force"] == "true"
    body = write.data
    assert set(body["spec"]) == {"replicas", "template"}  # the two knobs, nothing else
    replicas = body["spec"]["replicas"]
    assert replicas > 1
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "model-server"
    assert [e["name"] for e in container["env"]] == [server_env.MAX_BATCH_SIZE]

    status = await eventually(
        lambda: (cluster.isvc("svc").get("status") or {}).get("lastDecision"), what="status.lastDecision"
    )
    assert status["applied"] is True
    full = cluster.isvc("svc")["status"]
    assert full["replicas"] == replicas
    assert full["observed"]["qps"] == 2000
    types = {c["type"]: c for c in full["conditions"]}
    assert set(types) == {"Ready", "MetricsAvailable", "SLOMet", "ScalingLimited"}
    assert types["MetricsAvailable"]["status"] == "True"
    assert types["MetricsAvailable"]["reason"] == api.Reason.METRICS_READ
    for condition in types.values():
        dt.datetime.fromisoformat(condition["lastTransitionTime"].replace("Z", "+00:00"))
    status_writes = cluster.writes(rf"/{api.PLURAL}/svc/status$", "PATCH")
    assert status_writes
    assert all(r.headers["Content-Type"] == "application/merge-patch+json" for r in status_writes)

    scaled = await eventually(lambda: cluster.events(api.Reason.SCALED), what="a Scaled event")
    assert scaled[0]["type"] == "Normal"
    assert f"→ {replicas}" in scaled[0]["message"]
    # kmock stores the apply naively; the next steps see the new replicas and do not write again.
    await eventually(lambda: reader.calls >= 3, what="more control steps")
    assert len(scaling_writes(cluster)) == 1
    assert len(cluster.events(api.Reason.SCALED)) == 1
    applied = REGISTRY.get_sample_value(
        "slo_autoscaler_decisions_total",
        {"namespace": NAMESPACE, "inferenceservice": "svc", "outcome": "applied"},
    )
    assert applied is not None
    assert applied >= 1


async def test_prometheus_unreachable_holds_then_recovers(cluster: Cluster, run_operator: Any) -> None:
    """The real PrometheusReader against a closed loopback port, then a working source."""
    await cluster.create_isvc(isvc_manifest("svc"))
    dead = PrometheusReader(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, tick_seconds=0.5)
    reader = ScriptedReader(figures=busy_figures(qps=2000), delegate=dead)
    await run_operator(reader)

    condition = await eventually(
        lambda: (c := cluster.condition("svc", "MetricsAvailable")) and c["status"] == "False" and c,
        what="MetricsAvailable=False",
    )
    assert condition["reason"] == api.Reason.PROMETHEUS_ERROR
    assert "unreachable" in condition["message"]
    warnings = await eventually(lambda: cluster.events(api.Reason.METRICS_UNAVAILABLE), what="a Warning")
    assert warnings[0]["type"] == "Warning"
    await eventually(lambda: reader.calls >= 2, what="a retry")
    assert scaling_writes(cluster) == []  # replicas held: never changed blind
    assert len(cluster.events(api.Reason.METRICS_UNAVAILABLE)) == 1  # one Warning per outage

    reader.delegate = None  # Prometheus answers again
    await eventually(
        lambda: (c := cluster.condition("svc", "MetricsAvailable")) and c["status"] == "True", what="recovery"
    )
    await eventually(lambda: scaling_writes(cluster), what="scaling after recovery")
    assert cluster.events(api.Reason.METRICS_RECOVERED)
    dead.close()


async def test_no_series_and_no_traffic_are_told_apart(cluster: Cluster, run_operator: Any) -> None:
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=None)
    await run_operator(reader)
    await eventually(
        lambda: (c := cluster.condition("svc", "MetricsAvailable")) and c["reason"] == api.Reason.NO_SERIES,
        what="NoSeries",
    )
    reader.figures = busy_figures(qps=0.0, p99_s=None)  # type: ignore[arg-type]
    await eventually(
        lambda: (c := cluster.condition("svc", "MetricsAvailable")) and c["reason"] == api.Reason.NO_TRAFFIC,
        what="NoTraffic",
    )
    assert cluster.condition("svc", "MetricsAvailable")["status"] == "True"  # type: ignore[index]
    assert scaling_writes(cluster) == []


async def test_conflict_on_scaling_write_is_retried_without_duplicate_events(
    cluster: Cluster, run_operator: Any
) -> None:
    cluster.mock.fail(
        lambda r: r.headers.get("Content-Type") == APPLY and r.params.get("fieldManager") == "slo-autoscaler",
        status=409,
    )
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(reader)

    await eventually(lambda: len(scaling_writes(cluster)) >= 2, what="a retried scaling write", within=20)
    deployment = await eventually(
        lambda: (d := cluster.get("apps/v1/deployments", "svc")) and d["spec"]["replicas"] > 1 and d,
        what="replicas raised",
    )
    await eventually(lambda: cluster.events(api.Reason.SCALED), what="Scaled event")
    await eventually(lambda: reader.calls >= 4, what="later steps")
    assert len(scaling_writes(cluster)) == 2  # the failed one and the retry, no more
    assert len(cluster.events(api.Reason.SCALED)) == 1
    assert deployment["spec"]["replicas"] == scaling_writes(cluster)[-1].data["spec"]["replicas"]


async def test_conflict_on_status_write_posts_no_duplicate_events(
    cluster: Cluster, run_operator: Any
) -> None:
    cluster.mock.fail(lambda r: r.url.path.endswith("/svc/status") and r.method.value == "PATCH", status=409)
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(reader)

    await eventually(lambda: (cluster.isvc("svc").get("status") or {}).get("lastDecision"), what="status")
    await eventually(lambda: reader.calls >= 3, what="later steps")
    assert len(scaling_writes(cluster)) == 1
    assert len(cluster.events(api.Reason.SCALED)) == 1


async def test_unsatisfiable_target_qps_sets_scaling_limited(cluster: Cluster, run_operator: Any) -> None:
    manifest = isvc_manifest(
        "svc", slo={"p99LatencyMs": 100, "targetQps": 1_000_000}, replicas={"min": 1, "max": 2}
    )
    await cluster.create_isvc(manifest)
    reader = ScriptedReader(figures=busy_figures(qps=100))
    await run_operator(reader)

    condition = await eventually(
        lambda: (c := cluster.condition("svc", "ScalingLimited")) and c["status"] == "True" and c,
        what="ScalingLimited=True",
    )
    assert condition["reason"] == api.Reason.TARGET_QPS_UNREACHABLE
    assert condition["message"]
    (warning,) = await eventually(lambda: cluster.events(api.Reason.TARGET_QPS_UNREACHABLE), what="Warning")
    assert warning["type"] == "Warning"
    calls = reader.calls
    await eventually(lambda: reader.calls > calls + 1, what="the operator keeps running")


async def test_restart_resumes_from_status_without_a_burst(cluster: Cluster, run_operator: Any) -> None:
    """First run scales up; a second operator with the same status keeps the replicas (stabilisation)."""
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    first = await run_operator(reader)
    (write,) = await eventually(lambda: scaling_writes(cluster), what="scale up")
    high = write.data["spec"]["replicas"]
    await eventually(
        lambda: (cluster.isvc("svc").get("status") or {}).get("history"), what="history in status"
    )
    await first.stop()

    reader.figures = busy_figures(qps=50)  # load dropped while the operator was away
    second_reader = ScriptedReader(figures=busy_figures(qps=50))
    await run_operator(second_reader)
    await eventually(lambda: second_reader.calls >= 3, what="three steps of the new operator")
    assert len(scaling_writes(cluster)) == 1  # no scale-down burst: the history holds it
    assert cluster.get("apps/v1/deployments", "svc")["spec"]["replicas"] == high  # type: ignore[index]
    limited = cluster.condition("svc", "ScalingLimited")
    assert limited is not None
    assert limited["reason"] == "ScaleDownStabilisation"


async def test_history_older_than_the_window_lets_the_drop_through(
    cluster: Cluster, run_operator: Any
) -> None:
    """The counterpart of the restart test: the persisted history is what holds replicas.

    With recommendations older than the stabilisation window in status, the new operator scales
    down at once (an operator ignoring status would hold for a whole window, as with no history).
    """
    await cluster.create_isvc(isvc_manifest("svc"))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    first = await run_operator(reader)
    (write,) = await eventually(lambda: scaling_writes(cluster), what="scale up")
    high = write.data["spec"]["replicas"]
    await first.stop()
    await cluster.patch(
        f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}/svc/status",
        {
            "status": {
                "history": {
                    "recommendations": [
                        {"time": "2020-01-01T00:00:00.000Z", "replicas": high, "maxBatchSize": 32}
                    ],
                    "demandSamples": [],
                    "lastScaleUpTime": "2020-01-01T00:00:00.000Z",
                    "lastBatchChangeTime": "2020-01-01T00:00:00.000Z",
                }
            }
        },
    )
    second_reader = ScriptedReader(figures=busy_figures(qps=50))
    await run_operator(second_reader)
    later = await eventually(lambda: scaling_writes(cluster)[1:], what="a scale down")
    assert later[0].data["spec"]["replicas"] < high


async def test_dry_run_decides_and_changes_nothing(cluster: Cluster, run_operator: Any) -> None:
    await cluster.create_isvc(isvc_manifest("svc", scaling={"mode": "DryRun", "intervalSeconds": 1}))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(reader)
    decision = await eventually(
        lambda: (cluster.isvc("svc").get("status") or {}).get("lastDecision"), what="a decision"
    )
    assert decision["applied"] is False
    assert decision["replicas"] > 1
    await eventually(lambda: reader.calls >= 3, what="more steps")
    assert scaling_writes(cluster) == []
    assert cluster.get("apps/v1/deployments", "svc")["spec"]["replicas"] == 1  # type: ignore[index]
    assert len(cluster.events(api.Reason.DRY_RUN_DECISION)) == 1
    assert cluster.events(api.Reason.SCALED) == []


async def test_off_does_nothing(cluster: Cluster, run_operator: Any) -> None:
    await cluster.create_isvc(isvc_manifest("svc", scaling={"mode": "Off", "intervalSeconds": 1}))
    reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(reader)
    await eventually(
        lambda: (c := cluster.condition("svc", "Ready")) and c["reason"] == api.Reason.SCALING_OFF,
        what="Ready reason ScalingOff",
    )
    status_writes = len(cluster.writes(rf"/{api.PLURAL}/svc/status$", "PATCH"))
    await eventually(
        lambda: len(cluster.writes(rf"/{api.PLURAL}/svc/status$", "PATCH")) > status_writes,
        what="a later step",
    )
    assert reader.calls == 0  # not even Prometheus is asked
    assert scaling_writes(cluster) == []


async def test_scale_target_ref_touches_only_replicas_and_batch(cluster: Cluster, run_operator: Any) -> None:
    existing = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "existing", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "existing"}},
            "template": {
                "metadata": {"labels": {"app": "existing", m.INFERENCESERVICE_POD_LABEL: "svc"}},
                "spec": {
                    "containers": [
                        {"name": "sidecar", "image": "proxy"},
                        {
                            "name": "server",
                            "image": "mine",
                            "env": [{"name": "MAX_BATCH_SIZE", "value": "4"}],
                        },
                    ]
                },
            },
        },
    }
    await cluster.create(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", existing)
    manifest = isvc_manifest("svc")
    del manifest["spec"]["model"]
    manifest["spec"]["scaleTargetRef"] = {"name": "existing", "containerName": "server"}
    await cluster.create_isvc(manifest)
    await run_operator(ScriptedReader(figures=busy_figures(qps=2000)))

    (write, *_) = await eventually(lambda: scaling_writes(cluster, "existing"), what="scaling the target")
    assert write.data["spec"]["template"]["spec"]["containers"] == [
        {
            "name": "server",
            "env": [
                {
                    "name": "MAX_BATCH_SIZE",
                    "value": write.data["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
                }
            ],
        }
    ]
    assert cluster.writes(rf"{DEPLOYMENT_PATH}$", "POST") == []  # nothing owned is created
    assert cluster.writes(r"/services", "POST") == []


async def test_invalid_object_is_reported_and_nothing_is_created(cluster: Cluster, run_operator: Any) -> None:
    manifest = isvc_manifest("svc")
    manifest["spec"]["replicas"] = {"min": 1, "max": "many"}
    await cluster.create_isvc(manifest)
    await run_operator(ScriptedReader(figures=busy_figures(qps=100)))
    warning = await eventually(lambda: cluster.events(api.Reason.INVALID_SPEC), what="an InvalidSpec warning")
    assert "replicas.max" in warning[0]["message"]
    assert cluster.get("apps/v1/deployments", "svc") is None


async def test_spec_update_reapplies_the_template_only(cluster: Cluster, run_operator: Any) -> None:
    await cluster.create_isvc(isvc_manifest("svc"))
    await run_operator(ScriptedReader(figures=None))
    await eventually(lambda: cluster.get("apps/v1/deployments", "svc"), what="Deployment")
    await cluster.patch(
        f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}/svc",
        {"metadata": {"generation": 2}, "spec": {"model": {"image": "example.org/model-server:2"}}},
    )

    def template_applies() -> list[Any]:
        return [
            r
            for r in cluster.writes(rf"{DEPLOYMENT_PATH}/svc$", "PATCH")
            if r.params.get("fieldManager") == "slo-autoscaler-children"
        ]

    (apply,) = await eventually(template_applies, what="the template re-applied")
    assert apply.headers["Content-Type"] == APPLY
    assert apply.params["force"] == "true"
    body = apply.data
    assert "replicas" not in body["spec"]  # the scaler's field
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example.org/model-server:2"
    assert server_env.MAX_BATCH_SIZE not in {e["name"] for e in container["env"]}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-svc"


async def test_with_peering_only_the_leader_acts(cluster: Cluster, run_operator: Any) -> None:
    """Two replicas with PEERING_NAME: kopf peering pauses the lower-priority one entirely."""
    everything = {"get", "list", "watch", "create", "patch", "update", "delete"}
    cluster.mock.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock_resource(
        kind="ClusterKopfPeering", namespaced=False, verbs=everything
    )
    await cluster.create(
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "slo-autoscaler"}},
    )
    await cluster.create_isvc(isvc_manifest("svc"))
    leader_reader = ScriptedReader(figures=busy_figures(qps=2000))
    leader = await run_operator(leader_reader, peering_name="slo-autoscaler", priority=100)
    await eventually(lambda: leader_reader.calls >= 1, what="the leader acting")
    follower_reader = ScriptedReader(figures=busy_figures(qps=2000))
    await run_operator(follower_reader, peering_name="slo-autoscaler", priority=0)
    await eventually(lambda: leader_reader.calls >= 5, what="more steps of the leader")
    assert follower_reader.calls == 0

    await leader.stop()  # the leader leaves the peering: the follower takes over
    await eventually(lambda: follower_reader.calls >= 1, what="the follower acting", within=30)


async def test_with_the_real_prometheus_reader(cluster: Cluster, run_operator: Any, prometheus: Any) -> None:
    """The whole read path: PromQL against a real Prometheus, then decision, status and writes."""
    manifest = isvc_manifest("svc-a", prometheus={"windowSeconds": PROMETHEUS_WINDOW_S})
    await cluster.create_isvc(manifest)
    reader = PrometheusReader(prometheus.url, timeout_s=2.0, tick_seconds=1.0)
    await run_operator(reader)
    observed = await eventually(
        lambda: (cluster.isvc("svc-a").get("status") or {}).get("observed", {}).get("qps"),
        what="observed qps",
    )
    status = cluster.isvc("svc-a")["status"]
    assert observed == pytest.approx(50.0, rel=0.15)
    assert status["observed"]["p99LatencyMs"] == pytest.approx(35.0, rel=0.1)
    condition = cluster.condition("svc-a", "MetricsAvailable")
    assert condition is not None
    assert condition["reason"] == api.Reason.METRICS_READ
    assert status["lastDecision"]["reason"]
    reader.close()
