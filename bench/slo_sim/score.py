"""Scores of one run: SLO attainment per 1-minute window, cost in replica-seconds, stability, tail."""

from __future__ import annotations

import math
from dataclasses import dataclass

from slo_sim.fleet import fine_quantile
from slo_sim.simulate import RunResult


@dataclass(frozen=True)
class Score:
    policy: str
    trace: str
    attainment: float
    """Share of 1-minute windows with traffic whose P99 ≤ target (a shed request counts as too slow)."""
    replica_seconds: float
    cost_vs_oracle: float
    scale_events: int
    worst_p99_s: float
    shed: int
    requests: int
    wall_s: float

    @property
    def sim_requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else math.inf


def minute_p99s(result: RunResult) -> list[float]:
    """Ground-truth P99 of the requests arriving in each minute (NaN for a minute without any)."""
    return [fine_quantile(row) for row in result.recorder.truth_minutes]


def score(result: RunResult, trace: str, p99_target_s: float, oracle_replica_seconds: float) -> Score:
    p99s = [p for p in minute_p99s(result) if not math.isnan(p)]
    met = sum(1 for p in p99s if p <= p99_target_s)
    return Score(
        policy=result.policy,
        trace=trace,
        attainment=met / len(p99s) if p99s else 1.0,
        replica_seconds=result.replica_seconds,
        cost_vs_oracle=result.replica_seconds / oracle_replica_seconds
        if oracle_replica_seconds > 0
        else math.inf,
        scale_events=result.scale_events,
        worst_p99_s=max(p99s) if p99s else 0.0,
        shed=result.shed,
        requests=result.requests,
        wall_s=result.wall_s,
    )


def dominates(ours: Score, other: Score) -> bool:
    """At least as good on attainment and on cost, and strictly better on one."""
    eps_attainment, eps_cost = 1e-9, 1e-6 * max(other.replica_seconds, 1.0)
    no_worse = (
        ours.attainment >= other.attainment - eps_attainment
        and ours.replica_seconds <= other.replica_seconds + eps_cost
    )
    better = (
        ours.attainment > other.attainment + eps_attainment
        or ours.replica_seconds < other.replica_seconds - eps_cost
    )
    return no_worse and better
