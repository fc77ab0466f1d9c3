"""The latency model behind the policy: predicted P99 of one batching replica at a Poisson arrival rate.

Pure and cheap (the planner calls it thousands of times per decision, so results are memoised on
hashable inputs). The derivation and its assumptions are in ``docs/policy.md``; in short, for a
replica that runs one batch at a time, takes ``s(b)`` seconds for a batch of ``b``, and batches like
the model server (take whatever waits, up to ``B``; hold for company only when the arrival rate says
``B`` will gather within ``d``):

* holding happens when ``λ·d ≥ B-1``; then batches are full and the first request waits ``(B-1)/λ``;
* otherwise the effective batch ``b̄`` = min(B, max(1, λ·s(b̄))) (what gathers during the previous
  execution), solved by fixed-point iteration, and there is no formation wait;
* tail batch ``b₉₉ = min(B, b̄ + 2.33·sqrt(b̄))`` (what gathers per cycle is Poisson; slow requests ride
  in large batches), and ``s₉₉ = s(b₉₉)``;
* busy fraction ``ρ = λ·s(b̄)/b̄`` and saturation ``ρ_B = λ·s(B)/B`` (stable only below 1);
* residual wait: a request that finds a batch running waits out its remainder, P99
  ``R = s₉₉·(1 - 0.01/ρ)``;
* backlog wait: the work queue as an M/D/1 queue of requests each bringing ``s(B)/B`` of work, with an
  exponential tail fitted to the Pollaczek–Khinchine mean: ``Q = θ·ln(ρ_B/0.01)``,
  ``θ = (s(B)/B)/(2(1-ρ_B))``;
* ``W = sqrt(R² + Q²)`` (either regime dominates alone; the root-sum-square joins them smoothly);
* ``P99 ≈ max(F, W) + s₉₉``.

At ``B = 1`` the backlog term is the M/D/1 queue (mean exact, tail approximated).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from functools import lru_cache

ProfileTable = tuple[tuple[int, float], ...]
"""A profile as sorted ``(batch_size, seconds per execution)`` pairs: hashable, so results memoise."""

TAIL = 0.01
"""The quantile the model predicts is 1 - TAIL (P99)."""
TAIL_Z = 2.33
"""The standard normal's 99th percentile."""


def profile_table(batch_duration_s: Mapping[int, float]) -> ProfileTable:
    """Validate a measured profile and put it in the hashable form the model takes."""
    if not batch_duration_s:
        raise ValueError("the batch-duration profile is empty")
    table: list[tuple[int, float]] = []
    for size, seconds in sorted(batch_duration_s.items()):
        if int(size) != size or size < 1:
            raise ValueError(f"profile batch size {size!r} is not an integer >= 1")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"profile duration at batch size {size} is {seconds!r}, not a positive number")
        table.append((int(size), float(seconds)))
    return tuple(table)


def service_time(table: ProfileTable, batch: float) -> float:
    """Seconds to run a batch of ``batch``: linear between measured sizes, extrapolated beyond."""
    if batch <= table[0][0]:
        return table[0][1]
    for (b0, s0), (b1, s1) in itertools.pairwise(table):
        if batch <= b1:
            return s0 + (s1 - s0) * (batch - b0) / (b1 - b0)
    if len(table) == 1:
        return table[0][1] * batch / table[0][0]
    (b0, s0), (b1, s1) = table[-2], table[-1]
    return s1 + max(0.0, (s1 - s0) / (b1 - b0)) * (batch - b1)


def saturation_qps(table: ProfileTable, max_batch: int) -> float:
    """Throughput of one replica that always runs full batches: the rate it cannot keep up beyond."""
    return max_batch / service_time(table, max_batch)


def holds_for_full_batches(rate_qps: float, max_batch: int, max_delay_s: float) -> bool:
    """Whether the server's batcher waits for a full batch (it expects ``B`` within the delay)."""
    return max_batch > 1 and rate_qps * max_delay_s >= max_batch - 1


@lru_cache(maxsize=65536)
def effective_batch(table: ProfileTable, rate_qps: float, max_batch: int, max_delay_s: float) -> float:
    """Mean size of the batches a replica runs at ``rate_qps`` (fixed point of the gathering rule)."""
    if holds_for_full_batches(rate_qps, max_batch, max_delay_s):
        return float(max_batch)
    batch = 1.0
    for _ in range(30):
        new = min(float(max_batch), max(1.0, rate_qps * service_time(table, batch)))
        if abs(new - batch) < 1e-6:
            return new
        batch = new
    return batch


@lru_cache(maxsize=65536)
def predicted_p99_s(table: ProfileTable, rate_qps: float, max_batch: int, max_delay_s: float) -> float:
    """Predicted P99 (arrival to answer) of one replica at ``rate_qps``; inf when it cannot keep up."""
    if rate_qps <= 0:
        return service_time(table, 1)
    saturation = rate_qps / saturation_qps(table, max_batch)
    if saturation >= 1.0:
        return math.inf
    batch = effective_batch(table, rate_qps, max_batch, max_delay_s)
    busy = min(1.0, rate_qps * service_time(table, batch) / batch)
    # What gathers per cycle is Poisson: the slow requests ride in the large batches, so size the tail
    # by a high quantile of the batch size (normal approximation), not by its mean.
    tail_batch = min(float(max_batch), batch + TAIL_Z * math.sqrt(batch)) if max_batch > 1 else 1.0
    service = service_time(table, tail_batch)
    # A request that finds a batch running waits out its remainder: P(wait > w) = busy × (1 - w/s).
    residual = service * (1.0 - TAIL / busy) if busy > TAIL else 0.0
    # Beyond one batch: the work queue, as an M/D/1 queue of requests each bringing s(B)/B of work.
    per_request_work = service_time(table, max_batch) / max_batch
    backlog = 0.0
    if saturation > TAIL:
        backlog = per_request_work / (2.0 * (1.0 - saturation)) * math.log(saturation / TAIL)
    wait = math.hypot(residual, backlog)
    formation = (
        (max_batch - 1) / rate_qps if holds_for_full_batches(rate_qps, max_batch, max_delay_s) else 0.0
    )
    return max(formation, wait) + service


@lru_cache(maxsize=65536)
def capacity_qps(
    table: ProfileTable, max_batch: int, max_delay_s: float, latency_budget_s: float, correction: float = 1.0
) -> float:
    """The highest per-replica rate whose ``correction × predicted P99`` stays within ``latency_budget_s``.

    0 when no rate does. The prediction falls at first (batches fill sooner) and then rises (queueing), so
    the crossing is found on a geometric grid below saturation and refined by bisection.
    """

    def fits(rate: float) -> bool:
        return correction * predicted_p99_s(table, rate, max_batch, max_delay_s) <= latency_budget_s

    ceiling = saturation_qps(table, max_batch)
    grid = [ceiling * (1.0 - 0.5**k) for k in range(1, 40)]
    grid = [ceiling * 1e-3 * (1e3 ** (i / 24)) for i in range(24)] + [g for g in grid if g > ceiling * 0.9]
    grid.sort()
    best = 0.0
    next_bad: float | None = None
    for rate in grid:
        if fits(rate):
            best, next_bad = rate, None
        elif best > 0 and next_bad is None:
            next_bad = rate
    if best == 0.0:
        return 0.0
    if next_bad is None:
        return best
    low, high = best, next_bad
    for _ in range(30):
        mid = (low + high) / 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low
