"""The modes the operator suite does not run: namespaced and HA (kopf peering), against the chart's RBAC.

The operator suite runs the operator cluster-wide and standalone. Here the real operator (kopf with the
slo_operator handlers, started as `python -m slo_operator run` starts it) runs against kmock's Kubernetes
emulator with PEERING_NAME set, cluster-wide and namespaced, serving the bundled example InferenceService.
Every request it sends is checked against the RBAC that `helm template` renders for that mode, and every
peering rule of that RBAC must be used. In namespaced mode kopf lists and watches namespaces (denied, it
retries with backoff for about a minute before it falls back), so the chart grants that read.
Prometheus is a closed loopback port: the operator then holds replicas (a real path, no fake).
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_chart
import kmock
import pytest
import rbac_coverage as rbac
import yaml
from aiohttp import web
from helm_chart import RELEASE_NAMESPACE, REPO

from slo_operator import api
from slo_operator.settings import OperatorConfig

PEERING = "slo-peers"
WATCHED = "team-a"
SERVICE_ACCOUNT = f"{helm_chart.RELEASE}-slo-autoscaler"
EXAMPLE = REPO / "examples" / "inferenceservice-bundled.yaml"
TEST_CLIENT_HEADER = "X-Chart-Test-Client"
# Rules the chart renders only for HA or namespaced installs; test_rbac_coverage.py relies on this file
# to show they are used (the operator suite runs cluster-wide and standalone).
MODE_SPECIFIC_RESOURCES = frozenset({"clusterkopfpeerings", "kopfpeerings", "namespaces"})
STEP_TIMEOUT_S = 30.0


class NamespacesEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock, plus the namespace collection (list and watch) that kmock cannot route.

    Those requests are answered before kmock parses them and kept in ``namespace_requests``.
    The list holds the watched namespace; the watch stays open and quiet until the client leaves.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.namespace_requests: list[rbac.ApiRequest] = []

    async def __call__(self, raw_request: web.BaseRequest) -> web.StreamResponse:
        if raw_request.method != "GET" or raw_request.path.rstrip("/") != "/api/v1/namespaces":
            return await super().__call__(raw_request)  # type: ignore[no-any-return]
        query = {k: str(v) for k, v in raw_request.query.items()}
        self.namespace_requests.append(rbac.ApiRequest("GET", raw_request.path, query, None))
        if query.get("watch") != "true":
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": WATCHED}}
            body = {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}}
            return web.json_response(body | {"items": [namespace]})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        await asyncio.sleep(STEP_TIMEOUT_S * 3)  # cancelled when the operator stops watching
        return response


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": NamespacesEmulator}


def _declare_resources(emulator: Any) -> None:
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    info = kmock.ResourceInfo
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs=verbs
    )
    emulator.resources[f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"] = info(
        kind=api.KIND, namespaced=True, singular=api.SINGULAR, subresources={"status"}, verbs=verbs
    )
    emulator.resources["apps/v1/deployments"] = info(kind="Deployment", namespaced=True, verbs=verbs)
    emulator.resources["v1/services"] = info(kind="Service", namespaced=True, verbs=verbs)
    emulator.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=verbs)
    emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=verbs)
    emulator.resources["kopf.dev/v1/clusterkopfpeerings"] = info(
        kind="ClusterKopfPeering", namespaced=False, verbs=verbs
    )
    emulator.resources["kopf.dev/v1/kopfpeerings"] = info(kind="KopfPeering", namespaced=True, verbs=verbs)


async def _seed(emulator: Any, path: str, body: dict[str, Any]) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            str(emulator.url).rstrip("/") + path, json=body, headers={TEST_CLIENT_HEADER: "1"}
        ) as response,
    ):
        assert response.status < 300, await response.text()


def _inference_service() -> dict[str, Any]:
    body = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    body["metadata"].update(namespace=WATCHED, uid="uid-example", generation=1, resourceVersion="1")
    return dict(body)


async def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out after {STEP_TIMEOUT_S}s waiting for {what}"
        await asyncio.sleep(0.05)


async def _record_operator(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, namespaced: bool
) -> list[rbac.ApiRequest]:
    """Run the real operator until it has peered and served the example; return its requests."""
    import kopf

    from slo_operator import handlers  # noqa: F401 - registers the handlers with kopf

    _declare_resources(emulator)
    kubeconfig = tmp_path / "kubeconfig"
    server = str(emulator.url).rstrip("/")
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "operator", "user": {"token": "token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    # What the chart creates: the peering object (kopf waits on it when peering is mandatory).
    if namespaced:
        peering_path = f"/apis/kopf.dev/v1/namespaces/{WATCHED}/kopfpeerings"
        peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering"}
        peering["metadata"] = {"name": PEERING, "namespace": WATCHED, "resourceVersion": "1"}
    else:
        peering_path = "/apis/kopf.dev/v1/clusterkopfpeerings"
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
        peering["metadata"] = {"name": PEERING, "resourceVersion": "1"}
    await _seed(emulator, peering_path, peering)
    await _seed(
        emulator, f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{WATCHED}/{api.PLURAL}", _inference_service()
    )

    config = OperatorConfig(
        prometheus_url=f"http://127.0.0.1:{_free_port()}",
        prometheus_timeout_seconds=1.0,
        watch_namespaces=(WATCHED,) if namespaced else (),
        default_interval_seconds=1.0,
        metrics_port=0,
        health_port=0,
        peering_name=PEERING,
    )
    stop_flag = threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=kopf.get_default_registry(),
                    clusterwide=not config.watch_namespaces,
                    namespaces=list(config.watch_namespaces),
                    memo=kopf.Memo(config=config),
                    stop_flag=stop_flag,
                )
            )
        except BaseException as error:
            errors.append(error)

    def operator_requests() -> list[Any]:
        return [r for r in emulator if r.headers.get(TEST_CLIENT_HEADER) is None]

    def seen(method: str, fragment: str) -> bool:
        return any(r.method.value == method and fragment in r.url.path for r in operator_requests())

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    try:
        await _eventually(lambda: seen("PATCH", f"kopfpeerings/{PEERING}"), "the peering keep-alive")
        await _eventually(lambda: seen("POST", "/deployments"), "the example's Deployment")
        await _eventually(lambda: seen("PATCH", "/status"), "the example's status")
    finally:
        stop_flag.set()
        await asyncio.to_thread(thread.join, 20)
    assert not thread.is_alive(), "the operator did not stop within 20 s"
    assert not errors, errors
    served = [
        rbac.ApiRequest(
            r.method.value,
            r.url.path,
            {k: str(v) for k, v in r.params.items()},
            r.headers.get("Content-Type"),
        )
        for r in operator_requests()
    ]
    return served + list(emulator.namespace_requests)


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide-ha", "namespaced-ha"])
async def test_ha_operator_requests_are_allowed_and_peering_rules_used(
    helm: Path, kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespaced: bool
) -> None:
    values: dict[str, Any] = {"replicaCount": 2, "peering": {"enabled": True, "name": PEERING}}
    if namespaced:
        values["watchNamespaces"] = [WATCHED]
    objects = helm_chart.template(helm, values)
    grants = rbac.grants_for_service_account(objects, SERVICE_ACCOUNT, RELEASE_NAMESPACE)

    requests = await _record_operator(kmock, tmp_path, monkeypatch, namespaced=namespaced)
    accesses = {a for request in requests for a in rbac.accesses(request)}
    # kopf lists and watches namespaces only in namespaced mode (to follow the watched ones).
    namespace_verbs = {a.verb for a in accesses if (a.group, a.resource) == ("", "namespaces")}
    assert namespace_verbs == ({"list", "watch"} if namespaced else set())
    if namespaced:
        assert {a.namespace for a in accesses if not a.cluster_scoped} == {WATCHED}

    denied = sorted(a.describe() for a in accesses if not rbac.is_allowed(grants, a))
    assert not denied, "the chart's RBAC denies:\n  " + "\n  ".join(denied)

    peering_resource = "kopfpeerings" if namespaced else "clusterkopfpeerings"
    mode_specific = {p for p in rbac.granted_permissions(grants) if p[1] in MODE_SPECIFIC_RESOURCES}
    expected = {("kopf.dev", peering_resource, verb) for verb in ("list", "watch", "patch")}
    if namespaced:
        expected |= {("", "namespaces", "list"), ("", "namespaces", "watch")}
    assert mode_specific == expected
    used = {(a.group, a.resource_path, a.verb) for a in accesses}
    assert mode_specific <= used, f"granted, but no request used it: {sorted(mode_specific - used)}"
