"""Kubernetes RBAC, evaluated offline: which rule allows which API request.

Pure functions only (no helm, no files), so the mapping is unit-tested on hand-written requests and the
coverage test can replay the operator's recorded requests against the rules `helm template` renders.
The request → (group, resource, subresource, verb, namespace) mapping follows the API server's
``RequestInfoFactory`` (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go); rule matching follows
the RBAC authorizer (``RuleAllows``), minus wildcards, which the chart must never use anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"

# Paths every authenticated user may read: the default ClusterRoles system:discovery and
# system:public-info-viewer, bound to system:authenticated (not the chart's job to grant).
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")

# Subresources of a Namespace object: /api/v1/namespaces/NAME/status is not a resource in namespace NAME.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

# Cluster-scoped resources the operator may touch. Every other resource is taken as namespaced.
CLUSTER_SCOPED = frozenset(
    {
        ("", "namespaces"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("kopf.dev", "clusterkopfpeerings"),
        ("zalando.org", "clusterkopfpeerings"),
    }
)

# kopf peers through ClusterKopfPeering when cluster-wide and KopfPeering per namespace otherwise.
NAMESPACED_EQUIVALENT = {
    ("kopf.dev", "clusterkopfpeerings"): ("kopf.dev", "kopfpeerings"),
    ("zalando.org", "clusterkopfpeerings"): ("zalando.org", "kopfpeerings"),
}


class RequestFormatError(ValueError):
    """A recorded request line that is not what the recorder promised."""


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    """One HTTP request as recorded by the operator's test suite."""

    method: str
    path: str
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_type: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> ApiRequest:
        if not isinstance(obj, dict):
            raise RequestFormatError(f"expected a JSON object, got {type(obj).__name__}: {obj!r}")
        method, path = obj.get("method"), obj.get("path")
        if not isinstance(method, str) or not method:
            raise RequestFormatError(f"'method' must be a non-empty string in {obj!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise RequestFormatError(f"'path' must be an absolute URL path in {obj!r}")
        query = obj.get("query") or {}
        if not isinstance(query, dict):
            raise RequestFormatError(f"'query' must be an object in {obj!r}")
        content_type = obj.get("content_type")
        if content_type is not None and not isinstance(content_type, str):
            raise RequestFormatError(f"'content_type' must be a string or null in {obj!r}")
        flat_query = {str(k): str(v[0] if isinstance(v, list) and v else v) for k, v in query.items()}
        return cls(
            method=method.upper(), path=path.split("?", 1)[0], query=flat_query, content_type=content_type
        )


@dataclasses.dataclass(frozen=True, order=True)
class ResourceAccess:
    """What RBAC authorizes: one verb on one (sub)resource, in a namespace or cluster-wide (None)."""

    group: str
    resource: str
    subresource: str
    verb: str
    namespace: str | None
    name: str = ""

    @property
    def resource_path(self) -> str:
        """The resource as RBAC rules spell it: ``deployments`` or ``inferenceservices/status``."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def cluster_scoped(self) -> bool:
        return (self.group, self.resource) in CLUSTER_SCOPED

    def describe(self) -> str:
        group = self.group or "core"
        where = f"namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {group}/{self.resource_path} ({where})"


def is_discovery(path: str) -> bool:
    """True for non-resource URLs: /api, /apis, /apis/GROUP, /apis/GROUP/VERSION, /version, /openapi/…."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return True
    if parts[0] == "api":
        return len(parts) <= 2
    if parts[0] == "apis":
        return len(parts) <= 3
    return any(path == p or path.startswith(p + "/") for p in DISCOVERY_PREFIXES)


def accesses(request: ApiRequest) -> list[ResourceAccess]:
    """The RBAC checks one request needs; empty for discovery (non-resource) URLs.

    A server-side apply PATCH creates the object when it is missing, and the API server then
    authorizes ``create`` too, so an apply needs both verbs.
    """
    if is_discovery(request.path):
        return []
    parts = [p for p in request.path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise RequestFormatError(f"not a Kubernetes API path: {request.path}")

    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
        else:  # the Namespace object itself (or its status/finalize subresource)
            namespace = None
    if not rest:
        raise RequestFormatError(f"no resource in path: {request.path}")
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = "/".join(rest[2:])

    verb = _verb(request, has_name=bool(name), legacy_watch=legacy_watch)
    access = ResourceAccess(group, resource, subresource, verb, namespace, name)
    if verb == "patch" and (request.content_type or "").startswith(APPLY_PATCH_CONTENT_TYPE):
        return [access, dataclasses.replace(access, verb="create")]
    return [access]


def _verb(request: ApiRequest, *, has_name: bool, legacy_watch: bool) -> str:
    watching = legacy_watch or request.query.get("watch", "").lower() in {"true", "1"}
    match request.method:
        case "GET" | "HEAD":
            if watching:
                return "watch"
            return "get" if has_name else "list"
        case "POST":
            return "create"
        case "PUT":
            return "update"
        case "PATCH":
            return "patch"
        case "DELETE":
            return "delete" if has_name else "deletecollection"
    raise RequestFormatError(f"HTTP method {request.method} has no RBAC verb ({request.path})")


def as_in_namespaces(access: ResourceAccess, namespaces: Sequence[str]) -> list[ResourceAccess]:
    """The same access as the operator makes it when it serves only ``namespaces``.

    Recorded requests come from one run (cluster-wide or in test namespaces). In namespaced mode kopf
    lists and watches namespaced resources per namespace, and peers through namespaced KopfPeerings.
    """
    key = (access.group, access.resource)
    if key in NAMESPACED_EQUIVALENT:
        group, resource = NAMESPACED_EQUIVALENT[key]
        access = dataclasses.replace(access, group=group, resource=resource)
    elif access.cluster_scoped:
        return [access]
    return [dataclasses.replace(access, namespace=ns) for ns in namespaces]


@dataclasses.dataclass(frozen=True)
class PolicyRule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def from_manifest(cls, rule: Mapping[str, Any]) -> PolicyRule:
        if rule.get("nonResourceURLs"):
            raise ValueError(f"the chart grants no non-resource URLs, found {rule!r}")
        return cls(
            api_groups=frozenset(rule.get("apiGroups") or []),
            resources=frozenset(rule.get("resources") or []),
            verbs=frozenset(rule.get("verbs") or []),
            resource_names=frozenset(rule.get("resourceNames") or []),
        )

    def wildcards(self) -> list[str]:
        found = [f"apiGroups {g!r}" for g in self.api_groups if "*" in g]
        found += [f"resources {r!r}" for r in self.resources if "*" in r]
        found += [f"verbs {v!r}" for v in self.verbs if "*" in v]
        return found

    def allows(self, access: ResourceAccess) -> bool:
        if self.resource_names and access.name not in self.resource_names:
            return False
        return (
            access.group in self.api_groups
            and access.resource_path in self.resources
            and access.verb in self.verbs
        )


@dataclasses.dataclass(frozen=True)
class Grant:
    """Rules in force for a subject: everywhere (ClusterRoleBinding) or in one namespace (RoleBinding)."""

    rules: tuple[PolicyRule, ...]
    namespace: str | None
    source: str

    def allows(self, access: ResourceAccess) -> bool:
        if self.namespace is not None and access.namespace != self.namespace:
            return False
        return any(rule.allows(access) for rule in self.rules)


class RbacModelError(ValueError):
    """Rendered RBAC objects that do not fit together (a binding to a missing role, …)."""


def grants_for_service_account(
    objects: Iterable[Mapping[str, Any]], name: str, namespace: str
) -> list[Grant]:
    """Every grant that binds rendered (Cluster)Roles to the ServiceAccount ``namespace/name``."""
    objects = list(objects)
    cluster_roles = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ClusterRole"}
    roles = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o.get("kind") == "Role"
    }
    grants: list[Grant] = []
    for binding in objects:
        kind = binding.get("kind")
        if kind not in {"ClusterRoleBinding", "RoleBinding"}:
            continue
        if not any(_is_subject(s, name, namespace) for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        binding_ns = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
        if kind == "RoleBinding" and not binding_ns:
            raise RbacModelError(f"RoleBinding {binding['metadata']['name']} has no namespace")
        if ref["kind"] == "ClusterRole":
            role = cluster_roles.get(ref["name"])
        elif kind == "RoleBinding":
            role = roles.get((binding_ns, ref["name"]))
        else:
            raise RbacModelError(f"ClusterRoleBinding {binding['metadata']['name']} refers to a Role")
        if role is None:
            raise RbacModelError(
                f"{kind} {binding['metadata']['name']} refers to missing {ref['kind']} {ref['name']}"
            )
        rules = tuple(PolicyRule.from_manifest(r) for r in role.get("rules") or [])
        grants.append(
            Grant(rules, binding_ns, f"{kind} {binding['metadata']['name']} → {ref['kind']} {ref['name']}")
        )
    return grants


def _is_subject(subject: Mapping[str, Any], name: str, namespace: str) -> bool:
    return (
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == name
        and subject.get("namespace") == namespace
    )


def is_allowed(grants: Sequence[Grant], access: ResourceAccess) -> bool:
    return any(grant.allows(access) for grant in grants)


def wildcard_rules(objects: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for obj in objects:
        if obj.get("kind") in {"ClusterRole", "Role"}:
            if obj.get("aggregationRule"):
                yield f"{obj['kind']} {obj['metadata']['name']}: aggregationRule"
            for rule in obj.get("rules") or []:
                for found in PolicyRule.from_manifest(rule).wildcards():
                    yield f"{obj['kind']} {obj['metadata']['name']}: {found}"


def granted_permissions(grants: Iterable[Grant]) -> set[tuple[str, str, str]]:
    """(group, resource path, verb) of every rule, to find grants that no request uses."""
    return {
        (group, resource, verb)
        for grant in grants
        for rule in grant.rules
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    }
