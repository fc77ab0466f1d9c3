"""The Kubernetes adapter: the owned Deployment and Service, the scaling write, the status write.

One client throughout: the official ``kubernetes`` client's asyncio flavour (``kubernetes.aio``),
with plain dict bodies. The operator's credentials are loaded once (in-cluster, else kubeconfig)
and shared with kopf through its login handler, so both talk to the same API server as the same
identity.

Field ownership (server-side apply): ``FIELD_MANAGER`` (default ``slo-autoscaler``) owns exactly
``spec.replicas`` and the container's ``MAX_BATCH_SIZE`` env, set together in one apply (one
rollout). The rest of an owned Deployment's template belongs to ``<FIELD_MANAGER>-children``, so
re-applying the template on a spec change never resets the two knobs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig
from kubernetes.aio.client.exceptions import ApiException

from slo_contract import env as server_env
from slo_contract import metrics as m
from slo_operator import api
from slo_operator.actuator import ScaleState

APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
CONTAINER_NAME: Final = "model-server"
TEMPLATE_HASH_ANNOTATION: Final = f"{api.GROUP}/template-hash"
HTTP_PORT_NAME: Final = "http"
READY_PATH: Final = "/v2/health/ready"
LIVE_PATH: Final = "/v2/health/live"


class KubeError(Exception):
    """An API call failed; ``transient`` says whether retrying later can help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in (409, 429) or self.status >= 500


class TargetNotFound(KubeError, LookupError):
    """The Deployment to scale does not exist (yet)."""


def _error(action: str, error: ApiException) -> KubeError:
    detail = ""
    try:
        detail = json.loads(error.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        detail = str(error.body or "")[:200]
    return KubeError(
        f"{action}: HTTP {error.status} {error.reason or ''} {detail}".strip(), status=error.status
    )


# ---------------------------------------------------------------------------------- credentials


async def load_configuration() -> kclient.Configuration:
    """In-cluster service account, else the kubeconfig named by ``KUBECONFIG`` (read now, not at import)."""
    configuration = kclient.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        await kconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration
        )
    return configuration


async def bearer_token(configuration: kclient.Configuration) -> tuple[str | None, str | None]:
    """(scheme, token) for kopf's ConnectionInfo, refreshed through the client's own hook."""
    header = await configuration.get_api_key_with_prefix("BearerToken")
    if not header:
        header = await configuration.get_api_key_with_prefix("authorization")
    if not header:
        return None, None
    scheme, _, token = str(header).partition(" ")
    return (scheme, token) if token else (None, scheme)


# ------------------------------------------------------------------------------------- builders


def pod_labels(name: str) -> dict[str, str]:
    return {m.INFERENCESERVICE_POD_LABEL: name, "app.kubernetes.io/managed-by": "slo-autoscaler"}


def selector_labels(name: str) -> dict[str, str]:
    return {m.INFERENCESERVICE_POD_LABEL: name}


def _server_env(model: api.ModelSpec, batching: api.BatchingSpec) -> list[dict[str, str]]:
    env = [
        {"name": server_env.PORT, "value": str(model.port)},
        {"name": server_env.MAX_BATCH_DELAY_MS, "value": f"{batching.max_batch_delay_ms:g}"},
    ]
    if model.bundled_model:
        env.append({"name": server_env.MODEL, "value": model.bundled_model})
    if model.model_path:
        env.append({"name": server_env.MODEL_PATH, "value": model.model_path})
    if model.model_name:
        env.append({"name": server_env.MODEL_NAME, "value": model.model_name})
    env.extend({"name": var.name, "value": var.value} for var in model.env)
    return env


def _resources(model: api.ModelSpec) -> dict[str, dict[str, str]]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if model.cpu:
        requests["cpu"] = model.cpu
    if model.memory:
        requests["memory"] = limits["memory"] = model.memory
    if model.gpus_per_replica:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(model.gpus_per_replica)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def build_deployment(
    name: str,
    namespace: str,
    spec: api.InferenceServiceSpec,
    *,
    replicas: int | None,
    max_batch_size: int | None,
) -> dict[str, Any]:
    """The owned Deployment of the bundled server.

    ``replicas``/``max_batch_size`` are given only when creating it: afterwards they belong to the
    scaler's field manager and the template apply must leave them out.
    """
    model = spec.model
    if model is None:
        raise ValueError("build_deployment needs spec.model (a bundled server)")
    env = _server_env(model, spec.batching)
    if max_batch_size is not None:
        env.insert(0, {"name": server_env.MAX_BATCH_SIZE, "value": str(max_batch_size)})
    probe_port = HTTP_PORT_NAME
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": model.image,
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": model.port, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": probe_port},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": probe_port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": LIVE_PATH, "port": probe_port},
            "periodSeconds": 2,
            "failureThreshold": 150,
        },
        # exec sleep rather than the newer `sleep` action: it works on every Kubernetes version.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(model.pre_stop_seconds)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if model.image_pull_policy:
        container["imagePullPolicy"] = model.image_pull_policy
    resources = _resources(model)
    if resources:
        container["resources"] = resources
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": pod_labels(name)},
            "spec": {
                "terminationGracePeriodSeconds": model.termination_grace_period_seconds
                + model.pre_stop_seconds,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
            },
        },
    }
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": pod_labels(name)},
        "spec": deployment_spec,
    }


def build_service(name: str, namespace: str, spec: api.InferenceServiceSpec) -> dict[str, Any]:
    """The owned Service in front of the bundled server's pods."""
    port = spec.model.port if spec.model else 8080
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": pod_labels(name)},
        "spec": {
            "selector": selector_labels(name),
            "ports": [
                {"name": HTTP_PORT_NAME, "port": port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def scaling_patch(name: str, container: str, *, replicas: int, max_batch_size: int) -> dict[str, Any]:
    """The apply configuration the scaler owns: replicas and MAX_BATCH_SIZE, nothing else."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": container,
                            "env": [{"name": server_env.MAX_BATCH_SIZE, "value": str(max_batch_size)}],
                        }
                    ]
                }
            },
        },
    }


# ------------------------------------------------------------------------------------ operations


async def _ensure(create: Any, apply: Any, body: Mapping[str, Any], field_manager: str, what: str) -> str:
    """Create the object, or server-side apply it when it exists. Returns 'created' or 'applied'."""
    try:
        await create(body=dict(body), field_manager=field_manager)
        return "created"
    except ApiException as error:
        if error.status != 409:
            raise _error(f"creating {what}", error) from None
    try:
        await apply(body=dict(body), field_manager=field_manager, force=True, _content_type=APPLY_PATCH)
    except ApiException as error:
        raise _error(f"applying {what}", error) from None
    return "applied"


async def ensure_deployment(
    api_client: kclient.ApiClient, deployment: Mapping[str, Any], *, field_manager: str
) -> str:
    """Create the owned Deployment, or apply its template when it changed ('created'/'applied'/'unchanged').

    The template apply never carries replicas or MAX_BATCH_SIZE (the scaler's fields), and is
    skipped when the template hash annotation already matches: a resume writes nothing.
    """
    apps = kclient.AppsV1Api(api_client)
    meta = deployment["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    template = _without_scaled_fields(deployment)
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    for body in (deployment, template):
        body["metadata"].setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = digest

    response = await apps.create_namespaced_deployment_without_preload_content(
        namespace, cast(Any, deployment), field_manager=field_manager
    )
    text = await response.text()
    if response.status < 300:
        return "created"
    if response.status != 409:
        raise _error(
            f"creating Deployment {namespace}/{name}", ApiException(status=response.status, body=text)
        )
    live = await apps.read_namespaced_deployment_without_preload_content(name, namespace)
    live_text = await live.text()
    if live.status < 300:
        annotations = json.loads(live_text).get("metadata", {}).get("annotations") or {}
        if annotations.get(TEMPLATE_HASH_ANNOTATION) == digest:
            return "unchanged"
    response = await apps.patch_namespaced_deployment_without_preload_content(
        name, namespace, template, field_manager=field_manager, force=True, _content_type=APPLY_PATCH
    )
    if response.status >= 300:
        error = ApiException(status=response.status, reason=response.reason, body=await response.text())
        raise _error(f"applying Deployment {namespace}/{name}", error)
    return "applied"


def _without_scaled_fields(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The template apply leaves the scaler's two fields alone."""
    body = json.loads(json.dumps(deployment))
    body["spec"].pop("replicas", None)
    for container in body["spec"]["template"]["spec"]["containers"]:
        container["env"] = [e for e in container.get("env", []) if e["name"] != server_env.MAX_BATCH_SIZE]
    return dict(body)


async def ensure_service(
    api_client: kclient.ApiClient, service: Mapping[str, Any], *, field_manager: str
) -> str:
    core = kclient.CoreV1Api(api_client)
    meta = service["metadata"]
    namespace, name = meta["namespace"], meta["name"]

    async def create(body: dict[str, Any], field_manager: str) -> None:
        response = await core.create_namespaced_service_without_preload_content(
            namespace, cast(Any, body), field_manager=field_manager
        )
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason, body=await response.text())

    async def apply(body: dict[str, Any], **kwargs: Any) -> None:
        response = await core.patch_namespaced_service_without_preload_content(
            name, namespace, body, **kwargs
        )
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason, body=await response.text())

    return await _ensure(create, apply, service, field_manager, f"Service {namespace}/{name}")


async def patch_status(
    api_client: kclient.ApiClient, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Merge-patch the InferenceService's status subresource (never its spec: GitOps owns that)."""
    custom = kclient.CustomObjectsApi(api_client)
    response = await custom.patch_namespaced_custom_object_status_without_preload_content(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        name,
        {"status": dict(status)},
        _content_type=MERGE_PATCH,
    )
    if response.status >= 400:
        error = ApiException(status=response.status, reason=response.reason, body=await response.text())
        raise _error(f"patching status of {namespace}/{name}", error)


@dataclass
class KubernetesActuator:
    """Scales one Deployment: reads replicas/ready/MAX_BATCH_SIZE; writes both knobs in one apply."""

    api_client: kclient.ApiClient
    namespace: str
    deployment: str
    field_manager: str
    container: str | None = None
    """None: the Deployment's first container."""
    default_max_batch_size: int = 1
    """Assumed when the container has no MAX_BATCH_SIZE env (the server's own default)."""

    async def _read(self) -> dict[str, Any]:
        apps = kclient.AppsV1Api(self.api_client)
        response = await apps.read_namespaced_deployment_without_preload_content(
            self.deployment, self.namespace
        )
        text = await response.text()
        if response.status == 404:
            raise TargetNotFound(f"Deployment {self.namespace}/{self.deployment} not found", status=404)
        if response.status >= 400:
            error = ApiException(status=response.status, reason=response.reason, body=text)
            raise _error(f"reading Deployment {self.namespace}/{self.deployment}", error)
        body: dict[str, Any] = json.loads(text)
        return body

    def _container_of(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        containers = body.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if not containers:
            raise KubeError(f"Deployment {self.namespace}/{self.deployment} has no containers", status=422)
        if self.container is None:
            return dict(containers[0])
        for container in containers:
            if container.get("name") == self.container:
                return dict(container)
        raise KubeError(
            f"Deployment {self.namespace}/{self.deployment} has no container named {self.container!r}",
            status=422,
        )

    async def current(self) -> ScaleState:
        body = await self._read()
        container = self._container_of(body)
        batch = self.default_max_batch_size
        for var in container.get("env", []) or []:
            if var.get("name") == server_env.MAX_BATCH_SIZE and str(var.get("value", "")).isdigit():
                batch = int(var["value"])
        spec_replicas = body.get("spec", {}).get("replicas")
        return ScaleState(
            replicas=int(spec_replicas if spec_replicas is not None else 1),
            ready_replicas=int(body.get("status", {}).get("readyReplicas") or 0),
            max_batch_size=batch,
        )

    async def apply(self, *, replicas: int, max_batch_size: int, reason: str) -> None:
        container = self.container
        if container is None:
            container = str(self._container_of(await self._read())["name"])
        apps = kclient.AppsV1Api(self.api_client)
        body = scaling_patch(self.deployment, container, replicas=replicas, max_batch_size=max_batch_size)
        response = await apps.patch_namespaced_deployment_without_preload_content(
            self.deployment,
            self.namespace,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY_PATCH,
        )
        if response.status >= 400:
            error = ApiException(status=response.status, reason=response.reason, body=await response.text())
            raise _error(f"scaling Deployment {self.namespace}/{self.deployment} ({reason})", error)
