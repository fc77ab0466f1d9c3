"""The whole loop in a real cluster: model server pods → Prometheus → operator → Deployment.

Runs only with ``--e2e`` against the kind cluster ``make e2e-up`` creates (images built from this
checkout, Prometheus from tests/e2e/prometheus.yaml, the chart with tests/e2e/values-e2e.yaml).
Every wait is bounded and says on timeout what it waited for and what it saw instead. Each test
creates and deletes its own InferenceService, so they run in any order and `make e2e-test` can be
repeated on the same cluster.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_cluster import Cluster, artifacts_on_error, condition_is, describe_status, wait_for
from e2e_config import (
    AUTO_SERVICE,
    DELETE_SERVICE,
    DRY_RUN_LOAD_DURATION_S,
    DRY_RUN_SERVICE,
    LOAD_DURATION_S,
    LOAD_FACTOR,
    RAMP_START_FACTOR,
    inference_service,
    load_job,
    parse_load_summary,
    replica_capacity_qps,
    scale_out_load_qps,
    service_url,
    setting,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slo_contract import env as contract_env
from slo_contract.metrics import (
    BATCH_SIZE_LABEL,
    INFERENCESERVICE_LABEL,
    INFERENCESERVICE_POD_LABEL,
    NAMESPACE_LABEL,
    PROFILE_BATCH_DURATION_SECONDS,
)
from slo_operator.api import ConditionType, Reason

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

NAMESPACE = setting("E2E_NAMESPACE")
READY_TIMEOUT_S = 300.0
"""Pod start (image already on the node), the model's start-up profile, a scrape, a control step."""


@dataclass(frozen=True)
class Children:
    """The Deployment and Service the operator owns for one InferenceService."""

    deployment: client.V1Deployment
    service: client.V1Service


def owned_by(obj: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in (obj.metadata.owner_references or []))


def children_of(cluster: Cluster, service: dict[str, Any]) -> Children | None:
    """The InferenceService's children, found by owner reference (not by a guessed name)."""
    uid = service["metadata"]["uid"]
    deployments = [d for d in cluster.apps.list_namespaced_deployment(NAMESPACE).items if owned_by(d, uid)]
    services = [s for s in cluster.core.list_namespaced_service(NAMESPACE).items if owned_by(s, uid)]
    if not deployments or not services:
        return None
    assert len(deployments) == 1, (
        f"expected one owned Deployment, found {[d.metadata.name for d in deployments]}"
    )
    assert len(services) == 1, f"expected one owned Service, found {[s.metadata.name for s in services]}"
    return Children(deployments[0], services[0])


def batch_env(deployment: client.V1Deployment) -> str | None:
    for container in deployment.spec.template.spec.containers:
        for var in container.env or []:
            if var.name == contract_env.MAX_BATCH_SIZE:
                return str(var.value)
    return None


@contextlib.contextmanager
def inference_service_running(cluster: Cluster, name: str, mode: str) -> Iterator[Children]:
    """Apply the e2e InferenceService as ``name`` in ``mode``, wait until it serves, delete it after.

    On a failure the cluster's state is dumped before the deletion removes the evidence.
    """
    manifest = inference_service(name, mode)
    cluster.apply_service(manifest)
    try:
        with artifacts_on_error(cluster, name):

            def status() -> str:
                return describe_status(cluster.get_service(name, NAMESPACE))

            wait_for(
                f"InferenceService {NAMESPACE}/{name} to report Ready=True and MetricsAvailable=True",
                lambda: (
                    condition_is(cluster.get_service(name, NAMESPACE), ConditionType.READY, "True")
                    and condition_is(
                        cluster.get_service(name, NAMESPACE), ConditionType.METRICS_AVAILABLE, "True"
                    )
                ),
                READY_TIMEOUT_S,
                describe=status,
            )
            children = wait_for(
                f"the Deployment and Service owned by {name}",
                lambda: children_of(cluster, cluster.get_service(name, NAMESPACE)),
                60.0,
            )
            labels = children.deployment.spec.template.metadata.labels or {}
            assert labels.get(INFERENCESERVICE_POD_LABEL) == name, (
                f"the pods of {name} must carry {INFERENCESERVICE_POD_LABEL}={name} for Prometheus to find "
                f"them; labels are {labels}"
            )
            yield children
    finally:
        # Bounded; a deletion that hangs is the delete test's failure to report, not this one's.
        with contextlib.suppress(AssertionError, ApiException):
            cluster.delete_service_and_wait(name, NAMESPACE)


@contextlib.contextmanager
def load(
    cluster: Cluster, job_name: str, target: Children, start_qps: float, peak_qps: float, duration_s: int
) -> Iterator[str]:
    """Run the load generator as an in-cluster Job against the Service; delete the Job after.

    On a failure inside, the artifacts (the Job's log included) are written before the Job goes.
    """
    port = int(target.service.spec.ports[0].port)
    url = service_url(target.service.metadata.name, NAMESPACE, port)
    with contextlib.suppress(ApiException):
        cluster.batch.delete_namespaced_job(job_name, NAMESPACE, propagation_policy="Foreground")
    wait_for(
        f"an old Job {job_name} to be gone",
        lambda: not cluster.exists(lambda: cluster.batch.read_namespaced_job(job_name, NAMESPACE)),
        60.0,
    )
    cluster.batch.create_namespaced_job(NAMESPACE, load_job(job_name, url, start_qps, peak_qps, duration_s))
    try:
        with artifacts_on_error(cluster, job_name):
            yield job_name
    finally:
        with contextlib.suppress(ApiException):
            cluster.batch.delete_namespaced_job(job_name, NAMESPACE, propagation_policy="Background")


def job_active(cluster: Cluster, job_name: str) -> bool:
    status = cluster.batch.read_namespaced_job_status(job_name, NAMESPACE).status
    return not (status.succeeded or status.failed)


def wait_job_finished(cluster: Cluster, job_name: str, timeout_s: float) -> client.V1JobStatus:
    def finished() -> client.V1JobStatus | None:
        status = cluster.batch.read_namespaced_job_status(job_name, NAMESPACE).status
        return status if (status.succeeded or status.failed) else None

    status: client.V1JobStatus = wait_for(
        f"load Job {job_name} to finish", finished, timeout_s, interval_s=5.0
    )
    return status


def measured_profile(cluster: Cluster, name: str) -> dict[int, float]:
    """The start-up profile the service's pods exported, read back through the cluster's Prometheus.

    Finding it under the ``inferenceservice`` and ``namespace`` labels also proves the scrape
    config's relabelling in the real cluster.
    """
    selector = f'{NAMESPACE_LABEL}="{NAMESPACE}",{INFERENCESERVICE_LABEL}="{name}"'
    series = cluster.prometheus_query(
        f"min by ({BATCH_SIZE_LABEL}) ({PROFILE_BATCH_DURATION_SECONDS}{{{selector}}})"
    )
    return {int(s["metric"][BATCH_SIZE_LABEL]): float(s["value"][1]) for s in series}


def scale_out_load(cluster: Cluster, name: str, manifest: dict[str, Any]) -> float:
    profile = wait_for(
        f"{PROFILE_BATCH_DURATION_SECONDS} of {name} in Prometheus",
        lambda: measured_profile(cluster, name),
        90.0,
    )
    max_batch, max_replicas = (
        manifest["spec"]["batching"]["maxBatchSize"],
        manifest["spec"]["replicas"]["max"],
    )
    rate = scale_out_load_qps(profile, max_batch, max_replicas)
    capacity = replica_capacity_qps(profile, max_batch)
    print(f"{name}: profile {profile}; one replica ~{capacity:.0f} QPS; load up to {rate:.0f} QPS")
    return rate


SCALED_MESSAGE = re.compile(r"replicas (\d+) → (\d+): (\S.*)")
"""The operator's Scaled event: ``replicas 1 → 2: <the policy's reason>``."""


def scaling_events(cluster: Cluster, name: str) -> list[tuple[int, int, str]]:
    """(from, to, reason) of every Normal Scaled event about the InferenceService."""
    found = []
    for kind, reason, message in cluster.events_about(name, NAMESPACE):
        match = SCALED_MESSAGE.search(message)
        if kind == "Normal" and reason == Reason.SCALED and match:
            found.append((int(match[1]), int(match[2]), match[3]))
    return found


def replicas(cluster: Cluster, children: Children) -> int:
    deployment = cluster.deployment(children.deployment.metadata.name, NAMESPACE)
    return int(deployment.spec.replicas)


def test_auto_mode_scales_out_under_load_meets_the_slo_and_scales_back_in(cluster: Cluster) -> None:
    manifest = inference_service(AUTO_SERVICE, "Auto")
    min_replicas = int(manifest["spec"]["replicas"]["min"])
    with inference_service_running(cluster, AUTO_SERVICE, "Auto") as children:

        def status() -> str:
            return f"deployment replicas {replicas(cluster, children)}; " + describe_status(
                cluster.get_service(AUTO_SERVICE, NAMESPACE)
            )

        wait_for(
            f"the idle service to sit at replicas.min={min_replicas}",
            lambda: replicas(cluster, children) == min_replicas,
            120.0,
            describe=status,
        )
        rate = scale_out_load(cluster, AUTO_SERVICE, manifest)
        start_rate = RAMP_START_FACTOR * rate / LOAD_FACTOR
        start = time.monotonic()
        with load(cluster, "e2e-load-auto", children, start_rate, rate, LOAD_DURATION_S) as job:
            peak = wait_for(
                f"replicas to rise above {min_replicas} under load rising to {rate:.0f} QPS",
                lambda: (n := replicas(cluster, children)) > min_replicas and n,
                LOAD_DURATION_S * 0.8,
                describe=status,
            )
            wait_for(
                "SLOMet=True again while the load runs, with more than replicas.min replicas",
                lambda: (
                    job_active(cluster, job)
                    and replicas(cluster, children) > min_replicas
                    and condition_is(
                        cluster.get_service(AUTO_SERVICE, NAMESPACE), ConditionType.SLO_MET, "True"
                    )
                ),
                max(30.0, LOAD_DURATION_S - (time.monotonic() - start) - 5.0),
                describe=status,
            )
            peak = max(peak, replicas(cluster, children))
            job_status = wait_job_finished(cluster, job, LOAD_DURATION_S + 180.0)
            log = cluster.pod_logs(job, NAMESPACE)
            assert job_status.succeeded, f"the load Job failed; its log:\n{log[-4000:]}"
            summary = parse_load_summary(log)
            assert summary.failed == 0, f"the load generator saw failed requests: {summary.errors}"
            assert summary.ok == summary.sent, f"requests were left unanswered: {summary.raw}"
            expected = (start_rate + rate) / 2 * LOAD_DURATION_S
            assert summary.ok >= 0.9 * expected, f"too little load was offered: {summary.raw}"

        assert any(before < after for before, after, _ in scaling_events(cluster, AUTO_SERVICE)), (
            f"no {Reason.SCALED} event records the scale-out with its reason; events: "
            f"{cluster.events_about(AUTO_SERVICE, NAMESPACE)}"
        )

        wait_for(
            f"replicas to fall below the peak of {peak} after the load stopped",
            lambda: replicas(cluster, children) < peak,
            360.0,
            interval_s=5.0,
            describe=status,
        )
        wait_for(
            f"a {Reason.SCALED} event recording the scale-in with its reason",
            lambda: any(before > after for before, after, _ in scaling_events(cluster, AUTO_SERVICE)),
            30.0,
            describe=lambda: str(cluster.events_about(AUTO_SERVICE, NAMESPACE)),
        )


def test_dry_run_reports_a_recommendation_and_changes_nothing(cluster: Cluster) -> None:
    with inference_service_running(cluster, DRY_RUN_SERVICE, "DryRun") as children:
        name = children.deployment.metadata.name
        before = cluster.deployment(name, NAMESPACE)

        def unchanged() -> bool:
            now = cluster.deployment(name, NAMESPACE)
            assert now.spec.replicas == before.spec.replicas, (
                f"DryRun changed spec.replicas {before.spec.replicas} -> {now.spec.replicas}"
            )
            assert batch_env(now) == batch_env(before), (
                f"DryRun changed {contract_env.MAX_BATCH_SIZE} {batch_env(before)} -> {batch_env(now)}"
            )
            assert now.metadata.generation == before.metadata.generation, (
                "DryRun changed the Deployment's spec"
            )
            return True

        def recommends_more() -> bool:
            unchanged()
            status = cluster.get_service(DRY_RUN_SERVICE, NAMESPACE).get("status", {})
            return int(status.get("desiredReplicas") or 0) > int(before.spec.replicas)

        rate = scale_out_load(cluster, DRY_RUN_SERVICE, inference_service(DRY_RUN_SERVICE, "DryRun"))
        with load(cluster, "e2e-load-dryrun", children, rate, rate, DRY_RUN_LOAD_DURATION_S) as job:
            wait_for(
                f"status.desiredReplicas to recommend more than {before.spec.replicas} replicas under load",
                recommends_more,
                DRY_RUN_LOAD_DURATION_S - 10.0,
                describe=lambda: describe_status(cluster.get_service(DRY_RUN_SERVICE, NAMESPACE)),
            )
            service = cluster.get_service(DRY_RUN_SERVICE, NAMESPACE)
            decision = service["status"]["lastDecision"]
            assert decision["applied"] is False, f"DryRun applied a decision: {decision}"
            assert decision["replicas"] > before.spec.replicas, decision
            assert decision["reason"], decision
            dry_run_events = [
                e for e in cluster.events_about(DRY_RUN_SERVICE, NAMESPACE) if e[1] == Reason.DRY_RUN_DECISION
            ]
            assert dry_run_events, "no DryRunDecision event told what the operator would have done"
            assert not scaling_events(cluster, DRY_RUN_SERVICE), "DryRun posted a Scaled event"
            wait_job_finished(cluster, job, DRY_RUN_LOAD_DURATION_S + 180.0)
        unchanged()


def test_deleting_the_inferenceservice_removes_its_deployment_and_service(cluster: Cluster) -> None:
    manifest = inference_service(DELETE_SERVICE, "Auto")
    cluster.apply_service(manifest)
    with artifacts_on_error(cluster, DELETE_SERVICE):
        try:
            children = wait_for(
                f"the operator to create the Deployment and Service of {DELETE_SERVICE}",
                lambda: children_of(cluster, cluster.get_service(DELETE_SERVICE, NAMESPACE)),
                READY_TIMEOUT_S,
            )
        finally:
            cluster.delete_service_and_wait(DELETE_SERVICE, NAMESPACE)
        deployment, service = children.deployment.metadata.name, children.service.metadata.name
        wait_for(
            f"Deployment {deployment} and Service {service} to be garbage-collected",
            lambda: (
                not cluster.exists(lambda: cluster.apps.read_namespaced_deployment(deployment, NAMESPACE))
                and not cluster.exists(lambda: cluster.core.read_namespaced_service(service, NAMESPACE))
            ),
            120.0,
        )
