"""Discrete-event simulator of a fleet of batching model servers behind a load balancer.

Fast by construction: time advances in *segments* (between control ticks and pod-ready events);
within a segment the replica set is fixed, so arrivals are routed with numpy and each replica runs
its batches in one tight loop over its own sorted arrivals (one iteration per *batch*, not per
request); all per-request bookkeeping (latencies, histograms) is vectorised afterwards.

Each replica batches like the model server (``model_server.dataplane``): one execution at a time;
when it is free it takes whatever waits, up to ``max_batch``, and holds for company only when the
arrival rate says a full batch will gather before the oldest request has waited ``max_batch_delay``;
a request that finds ``max_queue_size`` requests waiting is shed (503). Execution time of a batch of
``b`` is the measured profile's ``s(b)``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from slo_contract.metrics import LATENCY_BUCKETS_SECONDS
from slo_operator.queueing import profile_table, service_time

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROM_BUCKETS: FloatArray = np.asarray(LATENCY_BUCKETS_SECONDS, dtype=np.float64)
"""The server's histogram buckets: the simulated Prometheus sees latencies through them."""

FINE_EDGES: FloatArray = np.geomspace(1e-4, 120.0, 700)
"""Ground-truth latency bins (2 % wide): scores use these, not the coarse Prometheus buckets."""


@dataclass(frozen=True)
class ServerSpec:
    """How one replica behaves: its measured profile and the server's batching settings."""

    batch_duration_s: Mapping[int, float]
    max_batch_delay_s: float = 0.002
    max_queue_size: int = 1024

    def service_times(self, max_batch: int) -> list[float]:
        """``s(b)`` for b = 0..max_batch (index 0 unused), interpolated from the profile."""
        table = profile_table(self.batch_duration_s)
        return [0.0] + [service_time(table, b) for b in range(1, max_batch + 1)]


@dataclass
class Replica:
    created_s: float
    ready_s: float
    max_batch: int
    generation: int
    free_s: float = 0.0
    pending: list[float] = field(default_factory=list)
    removed_s: float | None = None
    end_s: float | None = None
    """When the replica stopped costing: its last batch done after removal (drain)."""


@dataclass
class SegmentResult:
    """What one replica did in one segment, as flat lists (vectorised later)."""

    served_arrivals: list[float]
    batch_starts: list[float]
    batch_sizes: list[int]
    shed_arrivals: list[float]


def run_replica(
    replica: Replica,
    arrivals: list[float],
    until_s: float,
    service_s: list[float],
    max_batch_delay_s: float,
    max_queue_size: int,
    rate_estimate_qps: float,
) -> SegmentResult:
    """Run ``replica``'s batches that start before ``until_s`` over its pending + new ``arrivals``.

    Leaves the requests not yet started in ``replica.pending``. Shedding is exact for this batching
    rule: the queue only shrinks when a batch starts, so every arrival beyond ``max_queue_size``
    waiting requests before the next start finds it full.
    """
    queue = replica.pending + arrivals if replica.pending else arrivals
    count = len(queue)
    max_batch = replica.max_batch
    free = replica.free_s
    delay = max_batch_delay_s
    # The server holds for a full batch only when its recent arrival rate says one will gather in time.
    may_hold = max_batch > 1 and delay > 0 and rate_estimate_qps * delay >= max_batch - 1
    starts: list[float] = []
    sizes: list[int] = []
    shed: list[float] = []
    i = 0
    right = bisect.bisect_right
    while i < count:
        first = queue[i]
        start = first if first > free else free
        if may_hold:
            last_needed = i + max_batch - 1
            deadline = first + delay
            close = queue[last_needed] if last_needed < count and queue[last_needed] < deadline else deadline
            if close > start:
                # Holding is only worth it if the batch is not already full when the server frees up.
                arrived = right(queue, start, i, min(count, i + max_batch))
                if arrived - i < max_batch:
                    start = close
        if start >= until_s:
            break
        arrived_all = right(queue, start, i)
        if arrived_all - i > max_queue_size:
            cut = i + max_queue_size
            shed.extend(queue[cut:arrived_all])
            del queue[cut:arrived_all]
            count = len(queue)
            arrived_all = cut
        end = arrived_all if arrived_all - i <= max_batch else i + max_batch
        size = end - i
        starts.append(start)
        sizes.append(size)
        free = start + service_s[size]
        i = end
    replica.free_s = free
    served = queue[:i]
    replica.pending = queue[i:]
    if len(replica.pending) > max_queue_size:
        # Arrivals that found a full queue before the segment ended are shed now (their time is theirs).
        shed.extend(replica.pending[max_queue_size:])
        replica.pending = replica.pending[:max_queue_size]
    return SegmentResult(served, starts, sizes, shed)


@dataclass
class Recorder:
    """Per-second counters, as the server's Prometheus series would accumulate them, plus ground truth."""

    duration_s: float
    bins: int = 0
    requests: IntArray = field(init=False)
    latency_sum: FloatArray = field(init=False)
    latency_buckets: IntArray = field(init=False)
    shed: IntArray = field(init=False)
    batches: IntArray = field(init=False)
    batch_rows: IntArray = field(init=False)
    busy_s: FloatArray = field(init=False)
    ready_replica_s: FloatArray = field(init=False)
    truth_minutes: IntArray = field(init=False)

    def __post_init__(self) -> None:
        # Room for completions after the end (a request that arrived at the end still finishes).
        self.bins = math.ceil(self.duration_s) + 600
        self.requests = np.zeros(self.bins, dtype=np.int64)
        self.latency_sum = np.zeros(self.bins)
        self.latency_buckets = np.zeros((self.bins, len(PROM_BUCKETS) + 1), dtype=np.int64)
        self.shed = np.zeros(self.bins, dtype=np.int64)
        self.batches = np.zeros(self.bins, dtype=np.int64)
        self.batch_rows = np.zeros(self.bins, dtype=np.int64)
        self.busy_s = np.zeros(self.bins)
        self.ready_replica_s = np.zeros(self.bins)
        minutes = math.ceil(self.duration_s / 60) + 1
        self.truth_minutes = np.zeros((minutes, len(FINE_EDGES) + 2), dtype=np.int64)

    def record(self, arrivals: FloatArray, completions: FloatArray) -> None:
        if arrivals.size == 0:
            return
        latencies = completions - arrivals
        done_bin = np.minimum(completions.astype(np.int64), self.bins - 1)
        self.requests += np.bincount(done_bin, minlength=self.bins)
        self.latency_sum += np.bincount(done_bin, weights=latencies, minlength=self.bins)
        bucket = np.searchsorted(PROM_BUCKETS, latencies, side="left")
        np.add.at(self.latency_buckets, (done_bin, bucket), 1)
        minute = np.minimum((arrivals // 60).astype(np.int64), self.truth_minutes.shape[0] - 1)
        fine = np.searchsorted(FINE_EDGES, latencies, side="left")
        np.add.at(self.truth_minutes, (minute, fine), 1)

    def record_shed(self, arrivals: FloatArray) -> None:
        if arrivals.size == 0:
            return
        at = np.minimum(arrivals.astype(np.int64), self.bins - 1)
        self.shed += np.bincount(at, minlength=self.bins)
        minute = np.minimum((arrivals // 60).astype(np.int64), self.truth_minutes.shape[0] - 1)
        np.add.at(self.truth_minutes, (minute, len(FINE_EDGES) + 1), 1)

    def record_batches(self, starts: FloatArray, sizes: IntArray, durations: FloatArray) -> None:
        if starts.size == 0:
            return
        at = np.minimum(starts.astype(np.int64), self.bins - 1)
        self.batches += np.bincount(at, minlength=self.bins)
        self.batch_rows += np.bincount(at, weights=sizes, minlength=self.bins).astype(np.int64)
        self.busy_s += np.bincount(at, weights=durations, minlength=self.bins)

    def add_level(self, target: FloatArray, start_s: float, end_s: float, level: float) -> None:
        """Add ``level`` × seconds of overlap to each 1-s bin of ``[start_s, end_s)``."""
        if end_s <= start_s or level == 0:
            return
        first, last = int(start_s), min(math.ceil(end_s), self.bins)
        for second in range(first, last):
            overlap = min(end_s, second + 1) - max(start_s, second)
            if overlap > 0:
                target[second] += level * overlap

    # --- Views ---------------------------------------------------------------------------------

    def window_sum(self, series: npt.NDArray[np.float64] | IntArray, end_s: float, window_s: float) -> float:
        """Sum of a per-second series over ``[end_s - window_s, end_s)`` (whole seconds)."""
        hi = max(0, min(int(end_s), self.bins))
        lo = max(0, int(end_s - window_s))
        return float(series[lo:hi].sum())

    def window_quantile(self, end_s: float, window_s: float, q: float = 0.99) -> float:
        """``histogram_quantile(q, sum(rate(bucket[window])))`` as Prometheus computes it."""
        hi = max(0, min(int(end_s), self.bins))
        lo = max(0, int(end_s - window_s))
        counts = self.latency_buckets[lo:hi].sum(axis=0)
        return prometheus_histogram_quantile(q, counts)


def prometheus_histogram_quantile(q: float, counts: IntArray) -> float:
    """Prometheus's ``histogram_quantile``: linear within the bucket; the last finite bound if in +Inf.

    ``counts`` are per-bucket (not cumulative) with the +Inf bucket last. NaN when empty.
    """
    total = int(counts.sum())
    if total == 0:
        return math.nan
    cumulative = np.cumsum(counts)
    rank = q * total
    index = int(np.searchsorted(cumulative, rank, side="left"))
    if index >= len(PROM_BUCKETS):
        return float(PROM_BUCKETS[-1])
    upper = float(PROM_BUCKETS[index])
    lower = 0.0 if index == 0 else float(PROM_BUCKETS[index - 1])
    below = 0 if index == 0 else int(cumulative[index - 1])
    in_bucket = int(counts[index])
    if in_bucket == 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def fine_quantile(counts: IntArray, q: float = 0.99) -> float:
    """Quantile from the ground-truth bins (upper edge of the bin holding it; inf when shed)."""
    total = int(counts.sum())
    if total == 0:
        return math.nan
    index = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
    if index >= len(FINE_EDGES):
        return math.inf
    return float(FINE_EDGES[index])
