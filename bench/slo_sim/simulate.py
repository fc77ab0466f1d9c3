"""The control loop around the fleet: routing, pod start-up and drain, Prometheus-like views, any policy.

A policy sees an :class:`Observation` every ``control_interval_s`` and answers ``(replicas, batch)``.
Replicas it adds cost from the moment they are created and serve from ``startup_s`` later; replicas it
removes stop receiving traffic at once and cost until their queue has drained. A batch-size change is
a rolling restart: a new generation of pods at the new size is created at once (surge) and the old
generation is removed, drained, when every new pod is ready.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from slo_sim.fleet import (
    FloatArray,
    Recorder,
    Replica,
    SegmentResult,
    ServerSpec,
    run_replica,
)


@dataclass(frozen=True)
class Observation:
    """What a controller can know at ``time_s``: Prometheus views (scrape-lagged) and fine-grained ones."""

    time_s: float
    current_replicas: int
    ready_replicas: int
    max_batch_size: int
    # Prometheus: figures over [last scrape - window, last scrape].
    prom_window_s: float
    prom_newest_sample_s: float
    qps: float
    p99_s: float
    request_count: float
    mean_batch_size: float | None
    mean_batch_duration_s: float | None
    queue_depth: float
    utilisation: float
    """Busy fraction of the ready replicas over the window (what a GPU-utilisation metric reports)."""
    concurrency_stable: float
    """Mean in-flight requests (all pods) over the last 60 s, from 1-s pod reports (Knative's view)."""
    concurrency_panic: float
    """The same over the last 6 s."""
    profile: dict[int, float]


class Policy(Protocol):
    """Anything that scales the fleet: ours through an adapter, the baselines directly."""

    name: str
    control_interval_s: float

    def reset(self, initial_replicas: int, initial_batch: int) -> None: ...

    def decide(self, observation: Observation) -> tuple[int, int]: ...


@dataclass(frozen=True)
class SimConfig:
    startup_s: float = 30.0
    scrape_interval_s: float = 15.0
    rate_window_s: float = 60.0
    p99_target_s: float = 0.05
    seed: int = 0


@dataclass
class Timeline:
    """Per control tick: what the fleet looked like, for plots."""

    time_s: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    observed_qps: list[float] = field(default_factory=list)
    observed_p99_s: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    policy: str
    recorder: Recorder
    replica_seconds: float
    scale_events: int
    requests: int
    shed: int
    wall_s: float
    timeline: Timeline


class Fleet:
    def __init__(
        self, spec: ServerSpec, config: SimConfig, initial_replicas: int, initial_batch: int
    ) -> None:
        self.spec = spec
        self.config = config
        self.generation = 0
        self.batch = initial_batch
        self.replicas: list[Replica] = [Replica(0.0, 0.0, initial_batch, 0) for _ in range(initial_replicas)]
        self.retired: list[Replica] = []
        self._service: dict[int, list[float]] = {}

    def service(self, max_batch: int) -> list[float]:
        if max_batch not in self._service:
            self._service[max_batch] = self.spec.service_times(max_batch)
        return self._service[max_batch]

    def current(self) -> list[Replica]:
        return [r for r in self.replicas if r.generation == self.generation]

    def routable(self, now: float) -> list[Replica]:
        return [r for r in self.replicas if r.ready_s <= now]

    def next_ready_after(self, now: float) -> float:
        later = [r.ready_s for r in self.replicas if r.ready_s > now]
        return min(later) if later else math.inf

    def remove(self, replica: Replica, now: float, recorder: Recorder) -> None:
        """Stop routing to ``replica``; it finishes its queue (drain) and costs until then."""
        self.replicas.remove(replica)
        replica.removed_s = now
        if replica.ready_s > now:  # never served: gone at once
            replica.end_s = now
        else:
            result = run_replica(
                replica,
                [],
                math.inf,
                self.service(replica.max_batch),
                self.spec.max_batch_delay_s,
                self.spec.max_queue_size,
                0.0,
            )
            _record(recorder, result, self.service(replica.max_batch))
            replica.end_s = max(now, replica.free_s)
        self.retired.append(replica)

    def apply(self, now: float, replicas: int, batch: int, recorder: Recorder) -> bool:
        """Move towards ``replicas`` pods at ``batch``; True when anything changed."""
        startup = self.config.startup_s
        if batch != self.batch:
            self.generation += 1
            self.batch = batch
            for _ in range(replicas):
                self.replicas.append(Replica(now, now + startup, batch, self.generation))
            return True
        current = self.current()
        if replicas > len(current):
            for _ in range(replicas - len(current)):
                self.replicas.append(Replica(now, now + startup, batch, self.generation))
            return True
        if replicas < len(current):
            # Like a ReplicaSet: unready pods go first, then the newest.
            victims = sorted(current, key=lambda r: (r.ready_s <= now, -r.created_s))[
                : len(current) - replicas
            ]
            for replica in victims:
                self.remove(replica, now, recorder)
            return True
        return False

    def retire_old_generations(self, now: float, recorder: Recorder) -> None:
        current = self.current()
        if current and all(r.ready_s <= now for r in current):
            for replica in [r for r in self.replicas if r.generation != self.generation]:
                self.remove(replica, now, recorder)


def _record(recorder: Recorder, result: SegmentResult, service_s: list[float]) -> None:
    if result.batch_sizes:
        sizes = np.asarray(result.batch_sizes, dtype=np.int64)
        starts = np.asarray(result.batch_starts)
        durations = np.asarray(service_s)[sizes]
        completions = np.repeat(starts + durations, sizes)
        recorder.record(np.asarray(result.served_arrivals), completions)
        recorder.record_batches(starts, sizes, durations)
    if result.shed_arrivals:
        recorder.record_shed(np.asarray(result.shed_arrivals))


def simulate(
    policy: Policy,
    arrivals: FloatArray,
    duration_s: float,
    spec: ServerSpec,
    config: SimConfig,
    initial_replicas: int,
    initial_batch: int,
) -> RunResult:
    """Run ``policy`` over the sorted ``arrivals`` for ``duration_s`` seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    recorder = Recorder(duration_s)
    fleet = Fleet(spec, config, initial_replicas, initial_batch)
    policy.reset(initial_replicas, initial_batch)
    timeline = Timeline()
    interval = policy.control_interval_s
    next_control = interval
    scale_events = 0
    now = 0.0
    position = 0
    shed_no_endpoint = 0
    while now < duration_s:
        segment_end = min(next_control, fleet.next_ready_after(now), duration_s)
        upto = int(np.searchsorted(arrivals, segment_end, side="left"))
        batch_arrivals = arrivals[position:upto]
        position = upto
        routable = fleet.routable(now)
        recorder.add_level(recorder.ready_replica_s, now, segment_end, float(len(routable)))
        if not routable:
            recorder.record_shed(batch_arrivals)
            shed_no_endpoint += batch_arrivals.size
        else:
            # kube-proxy (iptables mode) picks a ready endpoint uniformly at random per connection.
            choice = rng.integers(0, len(routable), size=batch_arrivals.size)
            order = np.argsort(choice, kind="stable")
            bounds = np.concatenate(([0], np.cumsum(np.bincount(choice, minlength=len(routable)))))
            sorted_arrivals = batch_arrivals[order]
            span = max(segment_end - now, 1e-9)
            for index, replica in enumerate(routable):
                mine = sorted_arrivals[bounds[index] : bounds[index + 1]]
                service = fleet.service(replica.max_batch)
                result = run_replica(
                    replica,
                    mine.tolist(),
                    segment_end,
                    service,
                    spec.max_batch_delay_s,
                    spec.max_queue_size,
                    mine.size / span,
                )
                _record(recorder, result, service)
        now = segment_end
        fleet.retire_old_generations(now, recorder)
        if now >= next_control and now < duration_s:
            observation = _observe(fleet, recorder, config, now)
            replicas, batch = policy.decide(observation)
            if fleet.apply(now, replicas, batch, recorder):
                scale_events += 1
            timeline.time_s.append(now)
            timeline.replicas.append(len(fleet.current()))
            timeline.ready.append(len(fleet.routable(now)))
            timeline.batch.append(fleet.batch)
            timeline.observed_qps.append(observation.qps)
            timeline.observed_p99_s.append(observation.p99_s)
            next_control += interval
    # The end: every pod finishes what it holds (costed until done), then stop the meter.
    for replica in list(fleet.replicas):
        fleet.remove(replica, duration_s, recorder)
    replica_seconds = sum(
        (min(r.end_s if r.end_s is not None else duration_s, duration_s)) - r.created_s for r in fleet.retired
    )
    return RunResult(
        policy=policy.name,
        recorder=recorder,
        replica_seconds=replica_seconds,
        scale_events=scale_events,
        requests=int(arrivals.size),
        shed=int(recorder.shed.sum()),
        wall_s=time.perf_counter() - started,
        timeline=timeline,
    )


def _observe(fleet: Fleet, recorder: Recorder, config: SimConfig, now: float) -> Observation:
    scrape = config.scrape_interval_s
    last_scrape = math.floor(now / scrape) * scrape
    # Before a full window exists, rate() covers the samples there are.
    window = max(min(config.rate_window_s, last_scrape), scrape)
    # model_requests_total counts every answer, the 503s of a full queue included.
    count = recorder.window_sum(recorder.requests, last_scrape, window)
    shed = recorder.window_sum(recorder.shed, last_scrape, window)
    batches = recorder.window_sum(recorder.batches, last_scrape, window)
    rows = recorder.window_sum(recorder.batch_rows, last_scrape, window)
    busy = recorder.window_sum(recorder.busy_s, last_scrape, window)
    ready_s = recorder.window_sum(recorder.ready_replica_s, last_scrape, window)
    stable = recorder.window_sum(recorder.latency_sum, now, 60.0) / 60.0
    panic = recorder.window_sum(recorder.latency_sum, now, 6.0) / 6.0
    routable = fleet.routable(now)
    return Observation(
        time_s=now,
        current_replicas=len(fleet.current()),
        ready_replicas=len(routable),
        max_batch_size=fleet.batch,
        prom_window_s=window,
        prom_newest_sample_s=last_scrape,
        qps=(count + shed) / window,
        p99_s=recorder.window_quantile(last_scrape, window),
        request_count=count,
        mean_batch_size=rows / batches if batches else None,
        mean_batch_duration_s=busy / batches if batches else None,
        queue_depth=float(sum(len(r.pending) for r in routable)),
        utilisation=min(1.0, busy / ready_s) if ready_s > 0 else 0.0,
        concurrency_stable=stable,
        concurrency_panic=panic,
        profile=dict(fleet.spec.batch_duration_s),
    )
