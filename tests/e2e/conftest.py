"""Fixtures of the kind e2e tests: the cluster's clients, and artifacts dumped when a test fails.

The tests here run only with ``--e2e`` (``make e2e-test``); without it the root conftest skips
them with a reason, and nothing below touches a cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# The helper modules beside this file (e2e_config, e2e_cluster) are imported by plain name, here
# and by the Docker-free checks in tests/e2e_static/.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_cluster import ARTIFACTS_ATTRIBUTE, Cluster, dump_artifacts, utc_stamp
from e2e_config import ARTIFACTS_DIR

ALREADY_DUMPED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """Remember each phase's report on the item, so a fixture can tell that its test failed, and
    whether the test already wrote its artifacts (before its own cleanup)."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    if call.excinfo is not None and getattr(call.excinfo.value, ARTIFACTS_ATTRIBUTE, None) is not None:
        item.stash[ALREADY_DUMPED] = True
    return report


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return Cluster.connect()


@pytest.fixture(autouse=True)
def artifacts_on_failure(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[None]:
    """After a failed e2e test: operator logs, events and object YAML under build/e2e-artifacts/."""
    yield
    failed = any(
        getattr(getattr(request.node, f"report_{phase}", None), "failed", False)
        for phase in ("setup", "call")
    )
    if failed and "e2e" in request.node.keywords and not request.node.stash.get(ALREADY_DUMPED, False):
        folder = ARTIFACTS_DIR / f"{request.node.name}-{utc_stamp()}"
        dump_artifacts(cluster, folder)
        print(f"e2e artifacts written to {folder}")
