"""The policies the simulator compares: ours (through a thin adapter) and the standard autoscalers.

Every baseline follows its project's published defaults; the sources are listed in ``docs/policy.md``.
Baselines scale replicas only: the batch size stays at the model server's default, as it would
under HPA, KEDA or Knative, which do not know about it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from slo_operator.policy import History, MetricsSnapshot, Profile, Targets, decide
from slo_sim.simulate import Observation


@dataclass
class SloPolicy:
    """Our policy: builds a ``MetricsSnapshot`` from the simulated Prometheus and calls ``decide``."""

    targets: Targets
    control_interval_s: float = 15.0
    name: str = "slo-policy"
    history: History = field(default_factory=History)
    reasons: list[str] = field(default_factory=list)
    keep_reasons: bool = False

    def reset(self, initial_replicas: int, initial_batch: int) -> None:
        self.history = History()
        self.reasons = []

    def decide(self, observation: Observation) -> tuple[int, int]:
        snapshot = MetricsSnapshot(
            time_s=observation.time_s,
            window_s=observation.prom_window_s,
            qps=observation.qps,
            p99_s=None if math.isnan(observation.p99_s) else observation.p99_s,
            request_count=observation.request_count,
            ready_replicas=observation.ready_replicas,
            current_replicas=observation.current_replicas,
            current_max_batch_size=observation.max_batch_size,
            queue_depth=observation.queue_depth,
            mean_batch_size=observation.mean_batch_size,
            mean_batch_duration_s=observation.mean_batch_duration_s,
            profile=Profile(observation.profile),
            newest_sample_s=observation.prom_newest_sample_s,
        )
        decision = decide(self.targets, snapshot, self.history)
        self.history = decision.history
        if self.keep_reasons:
            self.reasons.append(f"t={observation.time_s:.0f}s {decision.reason}")
        return decision.replicas, decision.max_batch_size


@dataclass
class StaticPolicy:
    """Provisioned for the peak, never changed."""

    replicas: int
    batch: int
    name: str = "static-peak"
    control_interval_s: float = 60.0

    def reset(self, initial_replicas: int, initial_batch: int) -> None:
        pass

    def decide(self, observation: Observation) -> tuple[int, int]:
        return self.replicas, self.batch


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _hpa_behaviour(
    recommendations: deque[tuple[float, int]], now: float, current: int, desired: int, window_s: float
) -> int:
    """The HPA's default behaviour, shared by every HPA-driven baseline (KEDA is one).

    Scale down only to the highest recommendation of the stabilisation window; scale up by at most
    max(4 pods, 100 %) per period.
    """
    recommendations.append((now, desired))
    while recommendations and recommendations[0][0] <= now - window_s:
        recommendations.popleft()
    if desired < current:
        return min(current, max(r for _, r in recommendations))
    if desired > current:
        return min(desired, current + max(4, current))
    return desired


@dataclass
class HpaPolicy:
    """Kubernetes HPA (autoscaling/v2) on a utilisation metric, with its default behaviour.

    desired = ceil(current × utilisation / target); no change within the 0.1 tolerance; while scaling
    up, unready pods count as 0 % (the HPA's conservative rule); scale-up at most max(4 pods, 100 %)
    per 15 s; scale-down to the highest recommendation of the last 300 s.
    """

    batch: int
    min_replicas: int
    max_replicas: int
    target_utilisation: float = 0.7
    tolerance: float = 0.1
    control_interval_s: float = 15.0
    scale_down_stabilisation_s: float = 300.0
    name: str = "hpa"
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def reset(self, initial_replicas: int, initial_batch: int) -> None:
        self._recommendations = deque()

    def decide(self, observation: Observation) -> tuple[int, int]:
        current = observation.current_replicas
        ready = max(observation.ready_replicas, 1)
        ratio = observation.utilisation / self.target_utilisation
        if ratio > 1.0 and current > ready:
            # Unready pods are assumed to use 0 % when scaling up.
            ratio = observation.utilisation * ready / current / self.target_utilisation
        desired = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(current * ratio)
        desired = _clamp(desired, self.min_replicas, self.max_replicas)
        return _hpa_behaviour(
            self._recommendations, observation.time_s, current, desired, self.scale_down_stabilisation_s
        ), self.batch


@dataclass
class KedaPolicy:
    """KEDA's Prometheus scaler: an HPA on an external metric with ``AverageValue`` = ``threshold``.

    desired = ceil(qps ÷ threshold) (the HPA's external-metric rule), polled every 30 s, with the HPA's
    tolerance, scale-up limit and 300 s scale-down stabilisation.
    """

    batch: int
    threshold_qps: float
    min_replicas: int
    max_replicas: int
    tolerance: float = 0.1
    control_interval_s: float = 30.0
    scale_down_stabilisation_s: float = 300.0
    name: str = "keda-prometheus"
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def reset(self, initial_replicas: int, initial_batch: int) -> None:
        self._recommendations = deque()

    def decide(self, observation: Observation) -> tuple[int, int]:
        current = max(observation.current_replicas, 1)
        usage = observation.qps / (current * self.threshold_qps)
        desired = (
            current if abs(usage - 1.0) <= self.tolerance else math.ceil(observation.qps / self.threshold_qps)
        )
        desired = _clamp(desired, self.min_replicas, self.max_replicas)
        return _hpa_behaviour(
            self._recommendations, observation.time_s, current, desired, self.scale_down_stabilisation_s
        ), self.batch


@dataclass
class KpaPolicy:
    """Knative's KPA on concurrency, with its defaults.

    Target per pod = container concurrency × 70 % utilisation; every 2 s: stable window 60 s, panic
    window 6 s (10 % of stable); panic when the panic-window demand is ≥ 200 % of what the ready pods
    serve; in panic no scale-down, and panic ends after a full stable window without the condition;
    scale-down at most to half per tick (max-scale-down-rate 2), scale-up at most 1000×.
    """

    batch: int
    container_concurrency: float
    min_replicas: int
    max_replicas: int
    target_utilisation: float = 0.7
    panic_threshold: float = 2.0
    stable_window_s: float = 60.0
    max_scale_down_rate: float = 2.0
    max_scale_up_rate: float = 1000.0
    control_interval_s: float = 2.0
    name: str = "knative-kpa"
    _panic_since: float | None = None
    _max_panic: int = 0

    def reset(self, initial_replicas: int, initial_batch: int) -> None:
        self._panic_since = None
        self._max_panic = 0

    def decide(self, observation: Observation) -> tuple[int, int]:
        target = self.container_concurrency * self.target_utilisation
        ready = max(observation.ready_replicas, 1)
        stable = math.ceil(observation.concurrency_stable / target)
        panic = math.ceil(observation.concurrency_panic / target)
        now = observation.time_s
        if panic / ready >= self.panic_threshold:
            if self._panic_since is None:
                self._max_panic = 0
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since >= self.stable_window_s:
            self._panic_since = None
        if self._panic_since is not None:
            self._max_panic = max(self._max_panic, panic, observation.current_replicas)
            desired = self._max_panic
        else:
            desired = stable
        desired = min(desired, math.ceil(ready * self.max_scale_up_rate))
        desired = max(desired, math.floor(ready / self.max_scale_down_rate))
        return _clamp(desired, self.min_replicas, self.max_replicas), self.batch
