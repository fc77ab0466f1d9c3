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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from slo_operator.queueing import (
    ProfileTable,
    capacity_qps,
    predicted_p99_s,
    profile_table,
    saturation_qps,
)


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
    max_metrics_age_s: float = 120.0
    """Figures whose newest sample is older than this are stale: hold."""
    trend_window_s: float = 60.0
    """The past demand samples the rising-edge trend is fitted over."""
    batch_change_tolerance: float = 0.1
    """Keep the current batch size when its predicted P99 is within this fraction of the best one's."""
    backlog_drain_s: float = 30.0
    """A queue beyond what the running batches explain is planned to drain within this time."""


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
    newest_sample_s: float | None = None
    """Time of the newest sample behind the figures (None: as fresh as ``time_s``); to detect staleness."""


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
    demand_samples: tuple[tuple[float, float], ...] = ()
    """Recent ``(time_s, observed qps)`` pairs: the rising-edge trend is fitted to them."""
    latency_correction: float = 1.0
    """Smoothed observed ÷ predicted P99: scales the model's predictions (1.0 until there is evidence)."""


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
    """Choose replicas and max batch size for ``snapshot.time_s``.

    Scale up at once, scale down slowly, change the batch size rarely, and hold whenever the
    metrics cannot be trusted. The rules and the model are written down in ``docs/policy.md``.
    """
    validate_targets(targets)
    now = snapshot.time_s
    current = max(snapshot.current_replicas, 0)
    current_batch = snapshot.current_max_batch_size
    problem = _metrics_problem(targets, snapshot)
    if problem is not None:
        return _hold(targets, snapshot, history, problem)
    assert snapshot.qps is not None  # checked by _metrics_problem
    assert snapshot.profile is not None
    table = profile_table(snapshot.profile.batch_duration_s)
    budget_s = targets.slo_margin * targets.p99_target_s

    evidence = _p99_is_evidence(targets, snapshot)
    slo_met = None if not evidence else snapshot.p99_s is not None and snapshot.p99_s <= targets.p99_target_s
    correction = _updated_correction(targets, snapshot, history, table, evidence)
    demand, trend_note = _demand(targets, snapshot, history)
    violated = slo_met is False

    plan = _plan(
        targets,
        table,
        demand,
        correction,
        current_batch,
        _batch_change_allowed(targets, history, now, violated, snapshot.window_s),
    )
    wanted = plan.replicas
    limit = plan.limit

    if (
        violated
        and snapshot.p99_s is not None
        and current >= 1
        and _panic_allowed(targets, snapshot, history)
    ):
        # Panic: the SLO is broken now, whatever the model says; grow at once (like Knative's panic mode).
        factor = min(PANIC_MAX_FACTOR, snapshot.p99_s / targets.p99_target_s)
        panic = math.ceil(current * factor - 1e-9)
        if panic > wanted:
            wanted = panic
            trend_note += " (panic: SLO violated)"
    # What the recommendation is before stability rules: recorded for the scale-down window.
    window_start = now - targets.scale_down_stabilisation_s
    past = history.recommendations or (Recommendation(now, current, current_batch),)
    # With no history yet, what runs counts as recommended now: no scale-down before a full window.
    recommendations = (*(r for r in past if r.time_s > window_start), Recommendation(now, wanted, plan.batch))
    replicas = wanted
    if wanted < current:
        if violated:
            replicas, limit = current, Limit.SCALE_DOWN_STABILISATION
        else:
            stabilised = max(r.replicas for r in recommendations)
            if stabilised > wanted:
                replicas, limit = stabilised, Limit.SCALE_DOWN_STABILISATION
            if replicas < current - targets.max_scale_down_step:
                replicas, limit = current - targets.max_scale_down_step, Limit.SCALE_DOWN_STEP
            replicas = min(replicas, current)
    if replicas > targets.max_replicas:
        replicas, limit = targets.max_replicas, Limit.MAX_REPLICAS
    if replicas < targets.min_replicas:
        replicas, limit = targets.min_replicas, Limit.MIN_REPLICAS

    batch = plan.batch
    per_replica = demand / replicas if replicas > 0 else demand
    predicted = correction * predicted_p99_s(table, per_replica, batch, targets.max_batch_delay_s)
    capacity = replicas * capacity_qps(table, batch, targets.max_batch_delay_s, budget_s, correction)
    reachable = _target_qps_reachable(targets, table, correction, budget_s)

    new_history = History(
        recommendations=recommendations,
        last_scale_up_s=now if replicas > current else history.last_scale_up_s,
        last_scale_down_s=now if replicas < current else history.last_scale_down_s,
        last_batch_change_s=now if batch != current_batch else history.last_batch_change_s,
        demand_samples=_recent_samples(targets, history, now, snapshot.qps),
        latency_correction=correction,
    )
    reason = _reason(
        targets,
        snapshot,
        current,
        replicas,
        current_batch,
        batch,
        demand,
        predicted,
        limit,
        trend_note,
        slo_met,
    )
    return Decision(
        replicas=replicas,
        max_batch_size=batch,
        reason=reason,
        predicted_p99_s=predicted if math.isfinite(predicted) else None,
        capacity_qps=capacity,
        demand_qps=demand,
        limited_by=limit,
        target_qps_reachable=reachable,
        metrics_ok=True,
        slo_met=slo_met,
        history=new_history,
    )


def validate_targets(targets: Targets) -> None:
    """Refuse targets no decision can honour, naming the field (the CRD schema should already have)."""
    checks = [
        (math.isfinite(targets.p99_target_s) and targets.p99_target_s > 0, "p99_target_s must be > 0"),
        (0 <= targets.min_replicas <= targets.max_replicas, "need 0 <= min_replicas <= max_replicas"),
        (targets.max_replicas >= 1, "max_replicas must be >= 1"),
        (1 <= targets.min_batch_size <= targets.max_batch_size, "need 1 <= min_batch_size <= max_batch_size"),
        (targets.max_batch_delay_s >= 0, "max_batch_delay_s must be >= 0"),
        (targets.headroom >= 0, "headroom must be >= 0"),
        (0 < targets.slo_margin <= 1, "slo_margin must be in (0, 1]"),
        (targets.max_scale_down_step >= 1, "max_scale_down_step must be >= 1"),
        (targets.target_qps is None or targets.target_qps >= 0, "target_qps must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"invalid scaling targets: {message} (got {targets})")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _metrics_problem(targets: Targets, snapshot: MetricsSnapshot) -> str | None:
    """Why the snapshot cannot be acted on, or None when it can."""
    if snapshot.error:
        return f"metrics unavailable ({snapshot.error})"
    if snapshot.qps is None:
        return "no request-rate metric"
    if not _finite(snapshot.qps) or snapshot.qps < 0:
        return f"request rate is {snapshot.qps}"
    if (
        snapshot.newest_sample_s is not None
        and snapshot.time_s - snapshot.newest_sample_s > targets.max_metrics_age_s
    ):
        return f"metrics are stale ({snapshot.time_s - snapshot.newest_sample_s:.0f} s old)"
    if snapshot.profile is None or not snapshot.profile.batch_duration_s:
        return "no start-up profile (model_profile_batch_duration_seconds) yet"
    if snapshot.p99_s is not None and math.isnan(snapshot.p99_s) and (snapshot.request_count or 0) > 0:
        return "P99 is NaN although requests were answered"
    return None


def _p99_is_evidence(targets: Targets, snapshot: MetricsSnapshot) -> bool:
    return (
        _finite(snapshot.p99_s)
        and snapshot.request_count is not None
        and snapshot.request_count >= targets.min_requests_for_p99
    )


def _hold(targets: Targets, snapshot: MetricsSnapshot, history: History, problem: str) -> Decision:
    """Keep what runs (within bounds): missing figures are no reason to remove capacity."""
    replicas = min(max(snapshot.current_replicas, targets.min_replicas), targets.max_replicas)
    batch = min(max(snapshot.current_max_batch_size, targets.min_batch_size), targets.max_batch_size)
    return Decision(
        replicas=replicas,
        max_batch_size=batch,
        reason=f"hold {replicas} replicas at batch {batch}: {problem}",
        limited_by=Limit.METRICS_UNAVAILABLE,
        metrics_ok=False,
        history=history,
    )


def _updated_correction(
    targets: Targets, snapshot: MetricsSnapshot, history: History, table: ProfileTable, evidence: bool
) -> float:
    """Fold observed ÷ predicted P99 (at what runs now) into the smoothed correction.

    Rises fast (half the gap per decision) and falls slowly (a fifth), so a model that under-predicts
    gets fixed before it costs many windows, and one noisy quiet window does not undo it.
    """
    if not evidence or snapshot.ready_replicas < 1 or snapshot.qps is None or snapshot.p99_s is None:
        return history.latency_correction
    if not _steady(targets, snapshot, history):
        # The window mixes configurations, demands or a backlog: its P99 says nothing about the model.
        return history.latency_correction
    predicted = predicted_p99_s(
        table,
        snapshot.qps / snapshot.ready_replicas,
        snapshot.current_max_batch_size,
        targets.max_batch_delay_s,
    )
    if not math.isfinite(predicted) or predicted <= 0:
        return history.latency_correction
    ratio = min(CORRECTION_MAX, max(CORRECTION_MIN, snapshot.p99_s / predicted))
    if 1.0 / CORRECTION_DEAD_BAND <= ratio <= CORRECTION_DEAD_BAND:
        # Within what histogram buckets and sampling explain: evidence that the model is right.
        ratio = 1.0
    old = history.latency_correction
    weight = 0.5 if ratio > old else 0.2
    # At most ×1.5 per decision: one odd window cannot multiply the fleet; a real gap closes in a few steps.
    new = min(old + weight * (ratio - old), old * CORRECTION_MAX_STEP)
    # Rounded so that the memoised capacity search hits its cache on a steady load.
    return round(new, 2)


BATCH_TIE_FRACTION = 0.2
"""Predicted P99s within this fraction of the target of the lowest count as equally good."""
MAX_TREND_RISE = 0.25
"""The trend raises demand by at most this fraction of the observed rate."""
CORRECTION_MIN = 0.5
CORRECTION_MAX = 8.0
CORRECTION_MAX_STEP = 1.5
CORRECTION_DEAD_BAND = 1.3
"""Observed ÷ predicted within [1/1.3, 1.3] counts as agreement: histogram buckets are 15-25 % wide."""
STEADY_DEMAND_CHANGE = 0.1
"""Demand moving more than this fraction over the window is not steady enough to learn from."""
PANIC_MAX_FACTOR = 2.0
"""When the SLO is violated, grow at once by observed ÷ target, at most this factor."""


def _panic_allowed(targets: Targets, snapshot: MetricsSnapshot, history: History) -> bool:
    """Panic only on a violation the last scale-up cannot explain: its pods ready and in the window."""
    if snapshot.ready_replicas < snapshot.current_replicas:
        return False  # capacity is on its way
    last_up = history.last_scale_up_s
    return last_up is None or snapshot.time_s - last_up >= targets.startup_time_s + snapshot.window_s / 2


def _steady(targets: Targets, snapshot: MetricsSnapshot, history: History) -> bool:
    """Whether the metrics window saw one configuration only: every pod ready, no change within it."""
    if snapshot.ready_replicas != snapshot.current_replicas or snapshot.qps is None:
        return False
    if (
        snapshot.queue_depth is not None
        and snapshot.queue_depth > snapshot.ready_replicas * snapshot.current_max_batch_size
    ):
        return False
    samples = [(t, q) for t, q in history.demand_samples if t > snapshot.time_s - snapshot.window_s]
    samples.append((snapshot.time_s, snapshot.qps))
    if len(samples) >= 2 and abs(_slope(samples)) * snapshot.window_s > STEADY_DEMAND_CHANGE * snapshot.qps:
        return False
    settled_after = snapshot.time_s - snapshot.window_s - targets.startup_time_s
    changes = (history.last_scale_up_s, history.last_scale_down_s, history.last_batch_change_s)
    return all(change is None or change <= settled_after for change in changes)


def _demand(targets: Targets, snapshot: MetricsSnapshot, history: History) -> tuple[float, str]:
    """Observed QPS, raised on a rising edge by the trend over the lead time, plus any backlog to drain."""
    assert snapshot.qps is not None
    qps = snapshot.qps
    demand = qps
    note = ""
    samples = [(t, q) for t, q in history.demand_samples if t > snapshot.time_s - targets.trend_window_s]
    samples.append((snapshot.time_s, qps))
    if len(samples) >= 3:
        slope = _slope(samples)
        # A new pod serves only after start-up: plan for the rate one start-up time ahead. Capped, since
        # a windowed rate() climbing over a step overstates the slope of what comes next.
        rise = slope * targets.startup_time_s
        if slope > 0 and rise > 0.05 * qps:
            demand = qps + min(rise, MAX_TREND_RISE * qps)
            note = f" (rising {slope:.1f} qps/s)"
    if snapshot.queue_depth is not None and math.isfinite(snapshot.queue_depth):
        in_flight = max(snapshot.ready_replicas, 1) * snapshot.current_max_batch_size
        backlog = snapshot.queue_depth - in_flight
        if backlog > 0:
            demand += backlog / targets.backlog_drain_s
            note += f" (backlog {snapshot.queue_depth:.0f})"
    return demand, note


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of qps against time."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_q = sum(q for _, q in samples) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in samples)
    if var_t <= 0:
        return 0.0
    return sum((t - mean_t) * (q - mean_q) for t, q in samples) / var_t


def _recent_samples(
    targets: Targets, history: History, now: float, qps: float
) -> tuple[tuple[float, float], ...]:
    kept = tuple((t, q) for t, q in history.demand_samples if now - targets.trend_window_s < t < now)
    return (*kept, (now, qps))


def _batch_change_allowed(
    targets: Targets, history: History, now: float, violated: bool, window_s: float
) -> bool:
    """A batch-size change restarts every pod: only when the SLO is broken or the last change is old.

    Even a broken SLO waits until the last change has had time to show (a cold start plus one metrics
    window): judged earlier, the roll's own backlog reads as a wrong batch size and the size flaps.
    """
    if history.last_batch_change_s is None:
        return True
    since = now - history.last_batch_change_s
    if violated:
        return since >= targets.startup_time_s + window_s
    return since >= targets.batch_change_min_interval_s


@dataclass(frozen=True)
class _Plan:
    replicas: int
    batch: int
    limit: Limit | None


def candidate_batches(targets: Targets) -> tuple[int, ...]:
    """Powers of two within the batch bounds, and the bounds themselves."""
    sizes = {targets.min_batch_size, targets.max_batch_size}
    size = 1
    while size <= targets.max_batch_size:
        if size >= targets.min_batch_size:
            sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def _plan(
    targets: Targets,
    table: ProfileTable,
    demand: float,
    correction: float,
    current_batch: int,
    batch_change_allowed: bool,
) -> _Plan:
    """The fewest replicas that meet the target with headroom; among them the batch with the lowest P99."""
    budget_s = targets.slo_margin * targets.p99_target_s
    delay = targets.max_batch_delay_s
    in_bounds = targets.min_batch_size <= current_batch <= targets.max_batch_size
    batches = candidate_batches(targets) if batch_change_allowed or not in_bounds else (current_batch,)
    needed = demand * (1.0 + targets.headroom)
    options: list[tuple[int, float, int]] = []  # (replicas, predicted p99, batch)
    for batch in batches:
        per_replica = capacity_qps(table, batch, delay, budget_s, correction)
        if per_replica <= 0:
            continue
        replicas = max(1, math.ceil(needed / per_replica - 1e-9)) if needed > 0 else 0
        # A lightly loaded replica can still miss the target (the batch delay): add replicas until it fits.
        while (
            0 < replicas <= targets.max_replicas
            and correction * predicted_p99_s(table, demand / replicas, batch, delay) > budget_s
        ):
            replicas += 1
        options.append(
            (replicas, correction * predicted_p99_s(table, demand / max(replicas, 1), batch, delay), batch)
        )
    if not options:
        # Nothing meets the target at any rate: run the most capable configuration flat out.
        best_batch = max(batches, key=lambda b: saturation_qps(table, b))
        return _Plan(targets.max_replicas, best_batch, Limit.MAX_REPLICAS)
    fewest = min(r for r, _, _ in options)
    bounded = max(targets.min_replicas, min(fewest, targets.max_replicas))
    limit: Limit | None = None
    if fewest > targets.max_replicas:
        limit = Limit.MAX_REPLICAS
    scored = []
    for replicas, _, batch in options:
        if replicas > fewest:
            continue
        p99 = correction * predicted_p99_s(table, demand / max(bounded, 1), batch, delay)
        scored.append((p99, batch))
    lowest = min(p99 for p99, _ in scored)
    # Predictions this close to the lowest are equal for the SLO; then the larger capacity wins, so that
    # a burst finds room (a small batch chosen in a lull would have to restart every pod to grow back).
    tied = [batch for p99, batch in scored if p99 <= lowest + BATCH_TIE_FRACTION * targets.p99_target_s]
    best_batch = max(tied, key=lambda b: (capacity_qps(table, b, delay, budget_s, correction), -b))
    best_p99 = next(p99 for p99, batch in scored if batch == best_batch)
    current = [p for p, b in scored if b == current_batch]
    if (
        current
        and current[0] <= budget_s
        and current[0] <= best_p99 * (1.0 + targets.batch_change_tolerance) + 1e-9
    ):
        best_batch = current_batch
    elif limit is None and not batch_change_allowed and in_bounds:
        limit = Limit.BATCH_CHANGE_RATE
    if best_batch == targets.max_batch_size and fewest > targets.max_replicas:
        limit = Limit.MAX_REPLICAS
    return _Plan(bounded if fewest > 0 else targets.min_replicas, best_batch, limit)


def _target_qps_reachable(targets: Targets, table: ProfileTable, correction: float, budget_s: float) -> bool:
    if targets.target_qps is None:
        return True
    best = max(
        capacity_qps(table, b, targets.max_batch_delay_s, budget_s, correction)
        for b in candidate_batches(targets)
    )
    return targets.max_replicas * best >= targets.target_qps


def _reason(
    targets: Targets,
    snapshot: MetricsSnapshot,
    current: int,
    replicas: int,
    current_batch: int,
    batch: int,
    demand: float,
    predicted_s: float,
    limit: Limit | None,
    trend_note: str,
    slo_met: bool | None,
) -> str:
    verb = "scale" if replicas != current else "hold"
    head = f"{verb} {current}→{replicas}" if replicas != current else f"hold {replicas}"
    batch_part = f", batch {current_batch}→{batch}" if batch != current_batch else f" at batch {batch}"
    demand_part = "no traffic" if snapshot.qps == 0 else f"demand {demand:.0f} qps{trend_note}"
    observed = ""
    if slo_met is not None and snapshot.p99_s is not None:
        observed = f", observed p99 {snapshot.p99_s * 1e3:.0f} ms"
    elif snapshot.qps:
        observed = ", too few requests for an observed p99"
    predicted = f"{predicted_s * 1e3:.0f} ms" if math.isfinite(predicted_s) else "unbounded"
    bound = f"; held by {limit.value}" if limit is not None else ""
    return (
        f"{head}{batch_part}: {demand_part}, predicted p99 {predicted} vs target "
        f"{targets.p99_target_s * 1e3:.0f} ms{observed}{bound}"
    )
