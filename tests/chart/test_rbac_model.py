"""The offline RBAC model on hand-written requests and rules (the API server's own mapping rules)."""

from __future__ import annotations

from typing import Any

import pytest
import rbac_coverage as rbac
from rbac_coverage import ApiRequest, ResourceAccess


def _one(method: str, path: str, **kwargs: Any) -> ResourceAccess:
    [access] = rbac.accesses(ApiRequest(method, path, **kwargs))
    return access


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/apps/v1/namespaces/ns1/deployments", {}, ("apps", "deployments", "", "list", "ns1")),
        ("GET", "/apis/apps/v1/deployments", {"watch": "true"}, ("apps", "deployments", "", "watch", None)),
        ("GET", "/apis/apps/v1/namespaces/ns1/deployments/x", {}, ("apps", "deployments", "", "get", "ns1")),
        (
            "GET",
            "/apis/apps/v1/watch/namespaces/ns1/deployments",
            {},
            ("apps", "deployments", "", "watch", "ns1"),
        ),
        ("POST", "/api/v1/namespaces/ns1/events", {}, ("", "events", "", "create", "ns1")),
        ("PUT", "/api/v1/namespaces/ns1/services/s", {}, ("", "services", "", "update", "ns1")),
        ("DELETE", "/api/v1/namespaces/ns1/services/s", {}, ("", "services", "", "delete", "ns1")),
        ("DELETE", "/api/v1/namespaces/ns1/services", {}, ("", "services", "", "deletecollection", "ns1")),
        (
            "PATCH",
            "/apis/slo-autoscaler.io/v1alpha1/namespaces/ns1/inferenceservices/a/status",
            {},
            ("slo-autoscaler.io", "inferenceservices", "status", "patch", "ns1"),
        ),
        ("GET", "/api/v1/namespaces", {"watch": "1"}, ("", "namespaces", "", "watch", None)),
        ("GET", "/api/v1/namespaces/ns1", {}, ("", "namespaces", "", "get", None)),
        ("PUT", "/api/v1/namespaces/ns1/finalize", {}, ("", "namespaces", "finalize", "update", None)),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {"watch": "false"},
            ("apiextensions.k8s.io", "customresourcedefinitions", "", "list", None),
        ),
    ],
)
def test_requests_map_to_rbac_attributes_like_the_api_server(
    method: str, path: str, query: dict[str, str], expected: tuple[str, str, str, str, str | None]
) -> None:
    access = _one(method, path, query=query)
    assert (access.group, access.resource, access.subresource, access.verb, access.namespace) == expected


def test_server_side_apply_needs_create_as_well_as_patch() -> None:
    """An apply patch creates the object when it is missing; the API server authorizes `create` then."""
    request = ApiRequest(
        "PATCH",
        "/apis/apps/v1/namespaces/ns1/deployments/x",
        {"fieldManager": "slo-autoscaler", "force": "true"},
        "application/apply-patch+yaml",
    )
    assert sorted(a.verb for a in rbac.accesses(request)) == ["create", "patch"]
    merge = ApiRequest("PATCH", request.path, {}, "application/merge-patch+json")
    assert [a.verb for a in rbac.accesses(merge)] == ["patch"]


@pytest.mark.parametrize("path", ["/", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version"])
def test_discovery_paths_need_no_grant(path: str) -> None:
    assert rbac.accesses(ApiRequest("GET", path)) == []


def test_a_path_outside_the_api_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(rbac.RequestFormatError, match="not a Kubernetes API path"):
        rbac.accesses(ApiRequest("GET", "/metrics"))


def test_recorded_lines_are_parsed_and_bad_ones_named() -> None:
    request = ApiRequest.from_json(
        {"method": "get", "path": "/api/v1/services?x=1", "query": {"watch": ["true"]}, "content_type": None}
    )
    assert request == ApiRequest("GET", "/api/v1/services", {"watch": "true"}, None)
    with pytest.raises(rbac.RequestFormatError, match="'path'"):
        ApiRequest.from_json({"method": "GET", "path": "api/v1"})
    with pytest.raises(rbac.RequestFormatError, match="'method'"):
        ApiRequest.from_json({"path": "/api/v1"})


SA_NAME, SA_NS = "op", "ops"


def _binding(kind: str, name: str, role_kind: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NS}],
    }


RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["slo-autoscaler.io"], "resources": ["inferenceservices/status"], "verbs": ["patch"]},
]


def test_cluster_role_binding_allows_everywhere_but_only_listed_verbs_and_subresources() -> None:
    objects = [{"kind": "ClusterRole", "metadata": {"name": "op"}, "rules": RULES}]
    objects.append(_binding("ClusterRoleBinding", "op", "ClusterRole"))
    grants = rbac.grants_for_service_account(objects, SA_NAME, SA_NS)
    assert rbac.is_allowed(grants, _one("GET", "/apis/apps/v1/deployments", query={"watch": "true"}))
    assert rbac.is_allowed(grants, _one("PATCH", "/apis/apps/v1/namespaces/any/deployments/x"))
    assert not rbac.is_allowed(grants, _one("DELETE", "/apis/apps/v1/namespaces/any/deployments/x"))
    status = "/apis/slo-autoscaler.io/v1alpha1/namespaces/a/inferenceservices/x/status"
    assert rbac.is_allowed(grants, _one("PATCH", status))
    assert not rbac.is_allowed(grants, _one("PATCH", status.removesuffix("/status")))
    # A different ServiceAccount gets nothing from these bindings.
    assert rbac.grants_for_service_account(objects, "someone-else", SA_NS) == []


def test_role_binding_allows_only_in_its_namespace_and_never_cluster_wide() -> None:
    objects = [
        {"kind": "Role", "metadata": {"name": "op", "namespace": "ns1"}, "rules": RULES},
        _binding("RoleBinding", "op", "Role", namespace="ns1"),
    ]
    grants = rbac.grants_for_service_account(objects, SA_NAME, SA_NS)
    assert rbac.is_allowed(grants, _one("GET", "/apis/apps/v1/namespaces/ns1/deployments"))
    assert not rbac.is_allowed(grants, _one("GET", "/apis/apps/v1/namespaces/ns2/deployments"))
    assert not rbac.is_allowed(grants, _one("GET", "/apis/apps/v1/deployments"))


def test_binding_to_a_missing_role_is_reported() -> None:
    with pytest.raises(rbac.RbacModelError, match="missing ClusterRole op"):
        rbac.grants_for_service_account([_binding("ClusterRoleBinding", "op", "ClusterRole")], SA_NAME, SA_NS)


def test_wildcards_are_found() -> None:
    objects = [
        {
            "kind": "ClusterRole",
            "metadata": {"name": "bad"},
            "rules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "kind": "Role",
            "metadata": {"name": "worse"},
            "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}],
        },
    ]
    assert sorted(rbac.wildcard_rules(objects)) == [
        "ClusterRole bad: apiGroups '*'",
        "Role worse: resources '*'",
        "Role worse: verbs '*'",
    ]


def test_namespaced_mode_translation() -> None:
    """Cluster-wide lists become per-namespace lists; ClusterKopfPeering becomes KopfPeering; CRDs stay."""
    watch_all = _one("GET", "/apis/slo-autoscaler.io/v1alpha1/inferenceservices", query={"watch": "true"})
    assert [a.namespace for a in rbac.as_in_namespaces(watch_all, ["a", "b"])] == ["a", "b"]
    peering = _one("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/slo")
    [(group, resource, ns)] = {
        (a.group, a.resource, a.namespace) for a in rbac.as_in_namespaces(peering, ["a"])
    }
    assert (group, resource, ns) == ("kopf.dev", "kopfpeerings", "a")
    crds = _one("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    assert rbac.as_in_namespaces(crds, ["a", "b"]) == [crds]
