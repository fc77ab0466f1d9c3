"""Least privilege, proven: the chart's RBAC allows every API request the operator made, and no more.

The operator test suite runs the real operator (kopf) against kmock's Kubernetes emulator and records
every request it sent in build/operator-api-requests.jsonl. Here each request is mapped to the RBAC
check the API server would make and replayed against the rules `helm template` renders, for the
cluster-wide and the namespaced installation. Then the other way round: every granted verb must be one
that some request needed, unless it is listed in UNRECORDED_GRANTS with the reason it is still needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_chart
import pytest
import rbac_coverage as rbac
from helm_chart import RELEASE_NAMESPACE, REPO

RECORD = REPO / "build" / "operator-api-requests.jsonl"
OPERATOR_SOURCES = REPO / "operator" / "slo_operator"
OPERATOR_SUITE_TIMEOUT_S = 600
SERVICE_ACCOUNT = f"{helm_chart.RELEASE}-slo-autoscaler"
WATCHED = ["team-a", "team-b"]

RENDERINGS: dict[str, dict[str, Any]] = {
    "cluster-wide": {},
    "namespaced": {"watchNamespaces": WATCHED},
    "cluster-wide-ha": {"replicaCount": 2, "peering": {"enabled": True}},
    "namespaced-ha": {"replicaCount": 2, "peering": {"enabled": True}, "watchNamespaces": WATCHED},
}

# Grants that the operator suite's record does not exercise, each with the reason it is needed anyway.
_MODES = "used in namespaced/HA mode, which the operator suite does not run: shown by test_rbac_modes.py"
UNRECORDED_GRANTS: dict[tuple[str, str, str], str] = {
    **{
        ("kopf.dev", peering, verb): _MODES
        for peering in ("clusterkopfpeerings", "kopfpeerings")
        for verb in ("list", "watch", "patch")
    },
    ("", "namespaces", "list"): _MODES,
    ("", "namespaces", "watch"): _MODES,
}


def _record_is_stale() -> bool:
    if not RECORD.is_file():
        return True
    recorded_at = RECORD.stat().st_mtime
    return any(source.stat().st_mtime > recorded_at for source in OPERATOR_SOURCES.rglob("*.py"))


def _run_operator_suite() -> None:
    python = REPO / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), "-m", "pytest", "tests/operator", "-q"]
    command += ["-p", "no:cacheprovider"]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=OPERATOR_SUITE_TIMEOUT_S,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"the operator suite failed, so its request record is not trusted:\n{tail}"
    assert RECORD.is_file(), f"the operator suite passed but did not write {RECORD}:\n{tail}"


@pytest.fixture(scope="module")
def requests() -> list[rbac.ApiRequest]:
    """The operator's recorded requests, re-recorded when missing or older than the operator's code."""
    if _record_is_stale():
        _run_operator_suite()
    lines = [line for line in RECORD.read_text().splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(rbac.ApiRequest.from_json(json.loads(line)))
        except (json.JSONDecodeError, rbac.RequestFormatError) as error:
            pytest.fail(f"{RECORD}:{number}: {error}")
    return parsed


@pytest.fixture(scope="module")
def accesses(requests: list[rbac.ApiRequest]) -> set[rbac.ResourceAccess]:
    found = {access for request in requests for access in rbac.accesses(request)}
    # The record must show the operator at work, or there is nothing to prove.
    verbs = {(a.group, a.resource, a.verb) for a in found}
    assert ("slo-autoscaler.io", "inferenceservices", "watch") in verbs, (
        "no watch of InferenceServices recorded"
    )
    assert ("apps", "deployments", "patch") in verbs, "no Deployment write recorded"
    return found


@pytest.fixture(scope="module")
def grants(helm: Path) -> dict[str, list[rbac.Grant]]:
    rendered = {name: helm_chart.template(helm, values) for name, values in RENDERINGS.items()}
    return {
        name: rbac.grants_for_service_account(objects, SERVICE_ACCOUNT, RELEASE_NAMESPACE)
        for name, objects in rendered.items()
    }


PEERING_RESOURCES = frozenset({"clusterkopfpeerings", "kopfpeerings"})


def _as_installed(rendering: str, access: rbac.ResourceAccess) -> list[rbac.ResourceAccess]:
    """The access as the operator makes it under this installation (none: it does not make it there).

    The record mixes runs with and without PEERING_NAME; kopf touches its peering objects only with it.
    """
    if access.resource in PEERING_RESOURCES and not RENDERINGS[rendering].get("peering", {}).get("enabled"):
        return []
    return rbac.as_in_namespaces(access, WATCHED) if rendering.startswith("namespaced") else [access]


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_recorded_request_is_allowed(
    rendering: str, accesses: set[rbac.ResourceAccess], grants: dict[str, list[rbac.Grant]]
) -> None:
    denied = sorted(
        {
            needed.describe()
            for access in accesses
            for needed in _as_installed(rendering, access)
            if not rbac.is_allowed(grants[rendering], needed)
        }
    )
    assert not denied, f"the {rendering} RBAC denies requests the operator makes:\n  " + "\n  ".join(denied)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_grant_is_needed(
    rendering: str, accesses: set[rbac.ResourceAccess], grants: dict[str, list[rbac.Grant]]
) -> None:
    used = {
        (needed.group, needed.resource_path, needed.verb)
        for access in accesses
        for needed in _as_installed(rendering, access)
    }
    unused = rbac.granted_permissions(grants[rendering]) - used - UNRECORDED_GRANTS.keys()
    assert not unused, f"the {rendering} RBAC grants what no recorded request needs: {sorted(unused)}"


def test_unrecorded_grants_are_still_granted(grants: dict[str, list[rbac.Grant]]) -> None:
    """An exception that the chart no longer grants is a stale line in UNRECORDED_GRANTS."""
    granted = set().union(*(rbac.granted_permissions(g) for g in grants.values()))
    assert UNRECORDED_GRANTS.keys() <= granted
