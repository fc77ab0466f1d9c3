"""The offline oracle: knowing the whole trace, the fewest replicas per window that meet the target.

For each window it simulates that window's own arrivals on ``n`` fresh, ready replicas (random
routing, the same batching) and keeps the smallest ``n`` — over every candidate batch size — whose
P99 is within the target with nothing shed. It pays no start-up and no transitions, so it is a lower
bound on what any real controller can spend, not a policy one could run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slo_operator.queueing import capacity_qps, profile_table, saturation_qps
from slo_sim.fleet import FloatArray, Replica, ServerSpec, run_replica


@dataclass(frozen=True)
class OracleResult:
    window_s: float
    replicas: tuple[int, ...]
    batches: tuple[int, ...]

    @property
    def replica_seconds(self) -> float:
        return self.window_s * sum(self.replicas)

    @property
    def peak_replicas(self) -> int:
        return max(self.replicas)


def window_p99(
    arrivals: FloatArray, replicas: int, batch: int, spec: ServerSpec, seed: int, service: list[float]
) -> tuple[float, int]:
    """P99 latency and shed count of ``arrivals`` on ``replicas`` fresh replicas at ``batch``."""
    if arrivals.size == 0:
        return 0.0, 0
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, replicas, size=arrivals.size)
    order = np.argsort(choice, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(choice, minlength=replicas))))
    ordered = arrivals[order]
    span = max(float(arrivals[-1] - arrivals[0]), 1e-9)
    latencies: list[FloatArray] = []
    shed = 0
    for index in range(replicas):
        mine = ordered[bounds[index] : bounds[index + 1]]
        replica = Replica(0.0, 0.0, batch, 0, free_s=0.0)
        result = run_replica(
            replica,
            mine.tolist(),
            math.inf,
            service,
            spec.max_batch_delay_s,
            spec.max_queue_size,
            mine.size / span,
        )
        shed += len(result.shed_arrivals)
        if result.batch_sizes:
            sizes = np.asarray(result.batch_sizes, dtype=np.int64)
            done = np.repeat(np.asarray(result.batch_starts) + np.asarray(service)[sizes], sizes)
            latencies.append(done - np.asarray(result.served_arrivals))
    if not latencies:
        return math.inf, shed
    all_latencies = np.concatenate(latencies)
    if shed:
        all_latencies = np.concatenate((all_latencies, np.full(shed, math.inf)))
    return float(np.quantile(all_latencies, 0.99, method="higher")), shed


def fewest_replicas(
    arrivals: FloatArray,
    batch: int,
    spec: ServerSpec,
    p99_target_s: float,
    max_replicas: int,
    seed: int,
    service: list[float],
    guess: int,
) -> int | None:
    """The smallest replica count meeting the target for this window at ``batch`` (None above the max)."""

    def fits(n: int) -> bool:
        p99, shed = window_p99(arrivals, n, batch, spec, seed, service)
        return shed == 0 and p99 <= p99_target_s

    n = max(1, min(guess, max_replicas))
    if fits(n):
        while n > 1 and fits(n - 1):
            n -= 1
        return n
    while n < max_replicas:
        n += 1
        if fits(n):
            return n
    return None


def oracle(
    arrivals: FloatArray,
    duration_s: float,
    spec: ServerSpec,
    p99_target_s: float,
    batches: Sequence[int],
    *,
    min_replicas: int = 1,
    max_replicas: int = 64,
    window_s: float = 60.0,
    seed: int = 0,
) -> OracleResult:
    table = profile_table(spec.batch_duration_s)
    services = {b: spec.service_times(b) for b in batches}
    capacities = {b: capacity_qps(table, b, spec.max_batch_delay_s, p99_target_s) for b in batches}
    ranked = sorted(batches, key=lambda b: -capacities[b])
    windows = math.ceil(duration_s / window_s)
    edges = np.searchsorted(arrivals, np.arange(windows + 1) * window_s, side="left")
    chosen: list[int] = []
    chosen_batches: list[int] = []
    for w in range(windows):
        mine = arrivals[edges[w] : edges[w + 1]]
        rate = mine.size / window_s
        best_n, best_b = max_replicas, ranked[0]
        for batch in ranked:
            # No count below what keeps the replicas short of saturation can work: skip what cannot win.
            floor = max(1, math.ceil(rate / saturation_qps(table, batch)))
            if floor >= best_n:
                continue
            cap = capacities[batch]
            guess = max(floor, math.ceil(rate / cap)) if cap > 0 else best_n
            n = fewest_replicas(mine, batch, spec, p99_target_s, best_n - 1, seed + w, services[batch], guess)
            if n is not None and n < best_n:
                best_n, best_b = n, batch
        chosen.append(max(min_replicas, best_n))
        chosen_batches.append(best_b)
    return OracleResult(window_s, tuple(chosen), tuple(chosen_batches))
