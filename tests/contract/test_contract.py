"""The contract between the operator and the model server, and the layer rules that protect it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from slo_contract import env, metrics

REPO = Path(__file__).resolve().parents[2]


def _public_strings(module: object) -> dict[str, str]:
    return {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}


def test_env_names_are_distinct_and_all_listed() -> None:
    names = _public_strings(env)
    assert len(set(names.values())) == len(names)
    assert set(env.ALL) == set(names.values())
    for attribute, value in names.items():
        assert attribute == value, f"env.{attribute} should spell its own variable name, got {value!r}"


def test_metric_names_follow_prometheus_conventions() -> None:
    series = [
        metrics.REQUESTS_TOTAL,
        metrics.REQUEST_DURATION_SECONDS,
        metrics.QUEUE_DURATION_SECONDS,
        metrics.BATCH_SIZE,
        metrics.BATCH_DURATION_SECONDS,
        metrics.QUEUE_DEPTH,
        metrics.MAX_BATCH_SIZE,
        metrics.PROFILE_BATCH_DURATION_SECONDS,
    ]
    assert len(set(series)) == len(series)
    assert all(name.startswith("model_") for name in series)
    assert metrics.REQUESTS_TOTAL.endswith("_total")
    assert all(
        name.endswith("_seconds")
        for name in (metrics.REQUEST_DURATION_SECONDS, metrics.QUEUE_DURATION_SECONDS)
    )


def test_latency_buckets_can_resolve_a_p99_between_1ms_and_10s() -> None:
    buckets = metrics.LATENCY_BUCKETS_SECONDS
    assert list(buckets) == sorted(set(buckets))
    assert buckets[0] <= 0.001
    assert buckets[-1] >= 10.0
    widest_step = max(upper / lower for lower, upper in itertools.pairwise(buckets))
    assert widest_step <= 1.6, "linear interpolation inside a bucket must stay within ~25% of the truth"


def test_import_linter_contracts_hold() -> None:
    """Runs the real import-linter: the policy stays pure and the two parts stay apart."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("slo_operator.policy", ("torch", "kopf", "kubernetes", "prometheus_api_client")),
        ("slo_contract.metrics", ("torch", "kopf", "pydantic")),
        ("model_server", ("kopf", "kubernetes", "prometheus_api_client", "torch")),
    ],
)
def test_import_does_not_drag_in(module: str, forbidden: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing {module} loaded {result.stdout.strip()}"
