"""The latency model (``slo_operator.queueing``): limits with known answers and its shape."""

from __future__ import annotations

import math

import pytest

from slo_operator.queueing import (
    capacity_qps,
    effective_batch,
    predicted_p99_s,
    profile_table,
    saturation_qps,
    service_time,
)

TABLE = profile_table({1: 0.003, 2: 0.0031, 4: 0.0058, 8: 0.0093, 16: 0.0097, 32: 0.0132})


def test_profile_validation_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="empty"):
        profile_table({})
    with pytest.raises(ValueError, match="batch size 4"):
        profile_table({1: 0.01, 4: -1.0})
    with pytest.raises(ValueError, match="integer >= 1"):
        profile_table({0: 0.01})


def test_service_time_interpolates_and_extrapolates() -> None:
    assert service_time(TABLE, 1) == 0.003
    assert service_time(TABLE, 24) == pytest.approx((0.0097 + 0.0132) / 2)
    assert service_time(TABLE, 64) > service_time(TABLE, 32)
    assert service_time(profile_table({8: 0.008}), 16) == pytest.approx(0.016)


def test_batch_one_is_the_md1_queue() -> None:
    """At B=1 the backlog term is M/D/1 with its Pollaczek–Khinchine mean: exact in the known limit."""
    service = 0.004
    table = profile_table({1: service})
    rate = 200.0
    rho = rate * service
    theta = service / (2 * (1 - rho))
    backlog = theta * math.log(rho / 0.01)
    residual = service * (1 - 0.01 / rho)
    assert predicted_p99_s(table, rate, 1, 0.0) == pytest.approx(math.hypot(residual, backlog) + service)
    assert predicted_p99_s(table, 1 / service, 1, 0.0) == math.inf


def test_prediction_rises_with_load_towards_saturation() -> None:
    ceiling = saturation_qps(TABLE, 32)
    rates = [ceiling * f for f in (0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)]
    p99s = [predicted_p99_s(TABLE, r, 32, 0.002) for r in rates]
    assert p99s == sorted(p99s)
    assert predicted_p99_s(TABLE, ceiling * 1.01, 32, 0.002) == math.inf


def test_effective_batch_grows_with_load_within_bounds() -> None:
    sizes = [effective_batch(TABLE, r, 32, 0.002) for r in (10, 500, 1500, 2400)]
    assert sizes == sorted(sizes)
    assert sizes[0] == 1.0
    assert sizes[-1] <= 32
    # A batcher that expects a full batch within its delay holds for it.
    assert effective_batch(TABLE, 20000, 8, 0.002) == 8


def test_capacity_is_the_highest_rate_within_the_budget() -> None:
    budget = 0.02
    capacity = capacity_qps(TABLE, 32, 0.002, budget)
    assert 0 < capacity < saturation_qps(TABLE, 32)
    assert predicted_p99_s(TABLE, capacity, 32, 0.002) <= budget
    assert predicted_p99_s(TABLE, capacity * 1.02, 32, 0.002) > budget
    # A pessimistic correction lowers capacity; an impossible budget gives none.
    assert capacity_qps(TABLE, 32, 0.002, budget, 1.5) < capacity
    assert capacity_qps(TABLE, 32, 0.002, 0.001) == 0.0
