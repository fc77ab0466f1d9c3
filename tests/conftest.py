"""Suite-wide pytest options: the kind-based e2e tests are opt-in, as kopf does for its own."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run the end-to-end tests against a kind cluster (needs Docker, kind, kubectl, helm)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--e2e"):
        return
    skip_e2e = pytest.mark.skip(reason="e2e tests need a kind cluster: run `make e2e` (or pytest --e2e)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip_e2e)
