"""Talking to the kind cluster: clients, bounded waits, InferenceService status, events, artifacts."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from e2e_config import ARTIFACTS_DIR, CRD_GROUP, CRD_PLURAL, CRD_VERSION, setting
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """The API clients of the e2e cluster (context ``kind-$KIND_CLUSTER_NAME``)."""

    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi
    events: client.EventsV1Api

    @classmethod
    def connect(cls) -> Cluster:
        context = f"kind-{setting('KIND_CLUSTER_NAME')}"
        try:
            api = config.new_client_from_config(context=context)
        except config.ConfigException as error:
            raise RuntimeError(
                f"no kubeconfig context {context!r}: create the cluster first with `make e2e-up` ({error})"
            ) from error
        return cls.of(api)

    @classmethod
    def of(cls, api: client.ApiClient) -> Cluster:
        return cls(
            api=api,
            core=client.CoreV1Api(api),
            apps=client.AppsV1Api(api),
            batch=client.BatchV1Api(api),
            custom=client.CustomObjectsApi(api),
            events=client.EventsV1Api(api),
        )

    # --- InferenceServices ------------------------------------------------------------------------
    def apply_service(self, manifest: dict[str, Any]) -> None:
        """Create the InferenceService, or replace its spec when it exists (the test owns it)."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            current = self.get_service(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            self.custom.create_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, manifest
            )
            return
        body = dict(manifest)
        body["metadata"] = {**manifest["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        self.custom.replace_namespaced_custom_object(
            CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name, body
        )

    def get_service(self, name: str, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name
        )
        return result

    def delete_service(self, name: str, namespace: str) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name)

    def delete_service_and_wait(self, name: str, namespace: str, timeout_s: float = 120.0) -> None:
        self.delete_service(name, namespace)
        wait_for(
            f"InferenceService {namespace}/{name} to be gone (finalizers removed by the operator)",
            lambda: not self.exists(lambda: self.get_service(name, namespace)),
            timeout_s,
        )

    # --- Children -------------------------------------------------------------------------------
    def deployment(self, name: str, namespace: str) -> client.V1Deployment:
        return self.apps.read_namespaced_deployment(name, namespace)

    @staticmethod
    def exists(read: Callable[[], object]) -> bool:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def events_about(self, name: str, namespace: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of every event about the object, core/v1 and events.k8s.io/v1 alike."""
        found: list[tuple[str, str, str]] = []
        core = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        found += [(e.type or "", e.reason or "", e.message or "") for e in core.items]
        modern = self.events.list_namespaced_event(namespace, field_selector=f"regarding.name={name}")
        found += [(e.type or "", e.reason or "", e.note or "") for e in modern.items]
        return sorted(set(found))

    def prometheus_get(self, api_path: str, params: list[tuple[str, str]] | None = None) -> Any:
        """GET from the in-cluster Prometheus through the API server's service proxy; the decoded JSON."""
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET",
            resource_path=f"/api/v1/namespaces/{{namespace}}/services/{{name}}/proxy/{api_path.lstrip('/')}",
            path_params={"namespace": setting("MONITORING_NAMESPACE"), "name": "prometheus:9090"},
            query_params=params or [],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, _request_timeout=15)
        response.read()
        if response.status != 200:
            raise RuntimeError(f"Prometheus {api_path} answered {response.status}: {response.data!r}")
        return json.loads(response.data)

    def prometheus_query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query's result vector."""
        body = self.prometheus_get("api/v1/query", [("query", expr)])
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus rejected {expr!r}: {body}")
        return list(body["data"]["result"])

    def pod_logs(self, job_name: str, namespace: str) -> str:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
        if not pods:
            raise AssertionError(f"Job {namespace}/{job_name} has no pod")
        return str(self.core.read_namespaced_pod_log(pods[0].metadata.name, namespace))


def condition(service: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for entry in service.get("status", {}).get("conditions", []) or []:
        if entry.get("type") == kind:
            return dict(entry)
    return None


def condition_is(service: dict[str, Any], kind: str, status: str) -> bool:
    found = condition(service, kind)
    return found is not None and found.get("status") == status


def describe_status(service: dict[str, Any]) -> str:
    """A one-screen summary of an InferenceService's status, for timeout messages."""
    status = service.get("status", {}) or {}
    conditions = ", ".join(
        f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
        for c in status.get("conditions", []) or []
    )
    scalars = {k: v for k, v in status.items() if k != "conditions"}
    return f"status {scalars}; conditions [{conditions}]"


def wait_for(
    what: str,
    check: Callable[[], T],
    timeout_s: float,
    interval_s: float = 2.0,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; on timeout fail saying what was awaited.

    ``describe`` adds the state seen at the end (for example an InferenceService's conditions), so
    a timeout message says both what was expected and what there was instead.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except ApiException as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = describe() if describe else ""
            if last_error is not None:
                detail += f" (last API error: {last_error.status} {last_error.reason})"
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}. {detail}".strip())
        time.sleep(interval_s)


# --- Artifacts ------------------------------------------------------------------------------------

ARTIFACTS_ATTRIBUTE = "e2e_artifacts"
"""Set on an exception once its artifacts are written, so the outer layers do not dump twice."""


@contextlib.contextmanager
def artifacts_on_error(cluster: Cluster, label: str) -> Iterator[None]:
    """Dump the cluster's state when the body fails, *before* the caller's cleanup deletes the evidence."""
    try:
        yield
    except Exception as error:
        if getattr(error, ARTIFACTS_ATTRIBUTE, None) is None:
            folder = ARTIFACTS_DIR / f"{label}-{utc_stamp()}"
            dump_artifacts(cluster, folder)
            print(f"e2e artifacts written to {folder}")
            with contextlib.suppress(AttributeError):
                setattr(error, ARTIFACTS_ATTRIBUTE, folder)
        raise


def dump_artifacts(cluster: Cluster, folder: Path) -> None:
    """Operator logs, events and object YAML into ``folder``; each part best-effort, never raising.

    Called when a test fails, before the cluster is deleted, so CI can upload what happened.
    """
    folder.mkdir(parents=True, exist_ok=True)
    e2e_ns, operator_ns = setting("E2E_NAMESPACE"), setting("OPERATOR_NAMESPACE")
    serialize = cluster.api.sanitize_for_serialization

    def save(name: str, produce: Callable[[], object]) -> None:
        try:
            content = produce()
            text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        except Exception as error:  # a diagnostic must never hide the test's own failure
            text = f"could not collect {name}: {type(error).__name__}: {error}\n"
        (folder / name).write_text(text)

    for namespace in (operator_ns, e2e_ns):
        for pod in _pods(cluster, namespace):
            for container in pod.spec.containers:
                save(
                    f"logs-{namespace}-{pod.metadata.name}-{container.name}.log",
                    lambda p=pod, c=container, ns=namespace: cluster.core.read_namespaced_pod_log(
                        p.metadata.name, ns, container=c.name, tail_lines=5000
                    ),
                )
    for namespace in (e2e_ns, operator_ns, setting("MONITORING_NAMESPACE")):
        save(
            f"events-{namespace}.yaml", lambda ns=namespace: serialize(cluster.core.list_namespaced_event(ns))
        )
    save(
        "inferenceservices.yaml",
        lambda: cluster.custom.list_namespaced_custom_object(CRD_GROUP, CRD_VERSION, e2e_ns, CRD_PLURAL),
    )
    save("deployments.yaml", lambda: serialize(cluster.apps.list_namespaced_deployment(e2e_ns)))
    save("services.yaml", lambda: serialize(cluster.core.list_namespaced_service(e2e_ns)))
    save("jobs.yaml", lambda: serialize(cluster.batch.list_namespaced_job(e2e_ns)))
    save("pods.yaml", lambda: serialize(cluster.core.list_namespaced_pod(e2e_ns)))
    save("operator-pods.yaml", lambda: serialize(cluster.core.list_namespaced_pod(operator_ns)))
    save(
        "prometheus-targets.json",
        lambda: json.dumps(cluster.prometheus_get("api/v1/targets"), indent=1),
    )
    _export_kind_logs(folder / "kind-logs")


def _pods(cluster: Cluster, namespace: str) -> list[client.V1Pod]:
    try:
        return list(cluster.core.list_namespaced_pod(namespace, _request_timeout=15).items)
    except Exception:  # an unreachable cluster: the other parts record why
        return []


def _export_kind_logs(target: Path) -> None:
    kind = shutil.which("kind")
    if kind is None:
        return
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            [kind, "export", "logs", str(target), "--name", setting("KIND_CLUSTER_NAME")],
            capture_output=True,
            timeout=120,
            check=False,
        )


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
