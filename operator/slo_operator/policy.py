"""The scaling policy: replicas and max batch size, chosen together against a P99 target.

Pure by contract (import-linter enforces it): no I/O, no clock, no kopf, no Kubernetes,
no Prometheus client, no torch. Time comes in as an argument; the same inputs give the
same decision. Everything around it (Prometheus reader, actuators, kopf handlers, the
simulator) is an adapter that builds these inputs and acts on the output.

INTERFACE SKELETON laid down by the foundation issue; the policy issue fills in `decide`.
Field names here are shared with the operator and the simulator: extend, do not rename.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Targets:
    """What the InferenceService asks for, and the bounds the policy must keep."""

    p99_target_s: float
    """The P99 latency target, in seconds."""
    target_qps: float | None = None
    """Load the service promises to absorb within the target; None when unstated."""
    min_replicas: int = 1
    max_replicas: int = 10
    min_batch_size: int = 1
    max_batch_size: int = 32
    max_batch_delay_s: float = 0.005
    """The server's ``MAX_BATCH_DELAY_MS`` (as seconds): the longest a batch waits to fill."""
    headroom: float = 0.2
    """Capacity kept above demand, as a fraction of demand (0.2 = 20 % spare)."""
    scale_down_stabilisation_s: float = 300.0
    """Scale down only to the highest recommendation seen in this window."""
    max_scale_down_step: int = 1
    """At most this many replicas removed per decision."""
    batch_change_min_interval_s: float = 300.0
    """A batch-size change restarts every pod: no more often than this unless the SLO is violated."""
    startup_time_s: float = 30.0
    """How long a new replica takes to serve: the lead time for scaling ahead of a rising edge."""
    min_requests_for_p99: int = 100
    """A P99 computed from fewer requests in the window is not evidence."""
    slo_margin: float = 0.8
    """Plan for predicted P99 <= margin x target."""


@dataclass(frozen=True)
class Profile:
    """Measured duration of one model execution per batch size (``model_profile_batch_duration_seconds``)."""

    batch_duration_s: Mapping[int, float]


@dataclass(frozen=True)
class MetricsSnapshot:
    """What Prometheus said about one InferenceService, at one time. None means 'not known'."""

    time_s: float
    """When the snapshot was taken (the caller's clock, seconds)."""
    window_s: float
    """The rate()/quantile window the figures were computed over."""
    qps: float | None
    """Answered requests per second over the window, summed over replicas."""
    p99_s: float | None
    """P99 of ``model_request_duration_seconds`` over the window."""
    request_count: float | None
    """Requests answered in the window (to judge whether the P99 is evidence)."""
    ready_replicas: int
    current_replicas: int
    current_max_batch_size: int
    queue_depth: float | None = None
    mean_batch_size: float | None = None
    mean_batch_duration_s: float | None = None
    profile: Profile | None = None
    error: str | None = None
    """Set when the metrics could not be read at all (Prometheus down, query failed)."""


@dataclass(frozen=True)
class Recommendation:
    time_s: float
    replicas: int
    max_batch_size: int


@dataclass(frozen=True)
class History:
    """The controller's own memory, carried between decisions (and persisted in status)."""

    recommendations: tuple[Recommendation, ...] = ()
    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None
    last_batch_change_s: float | None = None


class Limit(enum.StrEnum):
    """Which bound held the decision back from what the model wanted."""

    MAX_REPLICAS = "MaxReplicas"
    MIN_REPLICAS = "MinReplicas"
    MAX_BATCH_SIZE = "MaxBatchSize"
    SCALE_DOWN_STABILISATION = "ScaleDownStabilisation"
    SCALE_DOWN_STEP = "ScaleDownStep"
    BATCH_CHANGE_RATE = "BatchChangeRate"
    METRICS_UNAVAILABLE = "MetricsUnavailable"


@dataclass(frozen=True)
class Decision:
    replicas: int
    max_batch_size: int
    reason: str
    """One sentence fit for a Kubernetes event."""
    predicted_p99_s: float | None = None
    capacity_qps: float | None = None
    """What ``replicas`` at ``max_batch_size`` can serve within the target."""
    demand_qps: float | None = None
    limited_by: Limit | None = None
    target_qps_reachable: bool = True
    """False when even max_replicas cannot serve ``targetQps`` within the target."""
    metrics_ok: bool = True
    """False when the decision is a hold because the metrics were missing, stale or NaN."""
    slo_met: bool | None = None
    """Observed P99 within the target (None when the window holds too few requests)."""
    history: History = field(default_factory=History)
    """The history to pass to the next call (this decision recorded)."""


def decide(targets: Targets, snapshot: MetricsSnapshot, history: History) -> Decision:
    """Choose replicas and max batch size for ``snapshot.time_s``."""
    raise NotImplementedError("filled in by the policy issue")
