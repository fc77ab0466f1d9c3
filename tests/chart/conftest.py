"""Fixtures of the chart tests: the real helm binary (never skipped: a missing helm fails loudly)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers beside this file (helm_chart, rbac_coverage) are plain modules, imported by name.
sys.path.insert(0, str(Path(__file__).parent))

import helm_chart


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return helm_chart.find_helm()
    except helm_chart.HelmMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
