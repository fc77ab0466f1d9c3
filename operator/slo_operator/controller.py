"""One control step, kopf-free: snapshot → policy → decision → actuator → new status.

The kopf daemon (``handlers``) and the local loop (``slo_demo``) both call :func:`control_step`
with their own actuator and the same Prometheus reader; nothing here knows which. The step
returns the whole new status (conditions, observed figures, the policy's history) and the events
to post; the caller writes and posts them.

Safety rules kept here, whatever the policy says: never lower replicas without metrics; in
``DryRun`` and ``Off`` never call :meth:`Actuator.apply`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from slo_operator import api, policy
from slo_operator.actuator import Actuator, ScaleState
from slo_operator.api import ConditionStatus, ConditionType, Reason
from slo_operator.prometheus import MetricsUnavailable, ServiceMetrics

PolicyFn = Callable[[policy.Targets, policy.MetricsSnapshot, policy.History], policy.Decision]


class MetricsReader(Protocol):
    """What the controller needs of a metrics source (``prometheus.PrometheusReader`` is one)."""

    async def read(
        self, namespace: str, name: str, *, window_s: int, selector: Mapping[str, str], now: float
    ) -> ServiceMetrics | None:
        """The service's figures; None when it has no series; raise MetricsUnavailable on failure."""
        ...


@dataclass(frozen=True)
class EventRecord:
    """A Kubernetes Event to post about the InferenceService."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class StepResult:
    status: api.InferenceServiceStatus
    """The complete new status (write it whole; conditions keep their transition times)."""
    events: tuple[EventRecord, ...]
    decision: policy.Decision | None
    """None in Off mode or when the scale target is missing."""
    applied: bool
    """True when the actuator was asked to change something."""
    metrics_ok: bool


# ----------------------------------------------------------------------------------- conversions


def to_rfc3339(time_s: float) -> str:
    """Seconds precision, as Kubernetes writes its own times (conditions, lastScaleTime)."""
    return dt.datetime.fromtimestamp(time_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_rfc3339_ms(time_s: float) -> str:
    """Millisecond precision for the history: the demand trend is fitted over seconds-apart samples."""
    return (
        dt.datetime.fromtimestamp(time_s, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def from_rfc3339(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def targets_from_spec(spec: api.InferenceServiceSpec) -> policy.Targets:
    return policy.Targets(
        p99_target_s=spec.slo.p99_latency_ms / 1000.0,
        target_qps=spec.slo.target_qps,
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        min_batch_size=spec.batching.min_batch_size,
        max_batch_size=spec.batching.max_batch_size,
        max_batch_delay_s=spec.batching.max_batch_delay_ms / 1000.0,
        headroom=spec.scaling.headroom,
        scale_down_stabilisation_s=float(spec.scaling.scale_down_stabilization_seconds),
        max_scale_down_step=spec.scaling.max_scale_down_step,
        batch_change_min_interval_s=float(spec.scaling.batch_change_min_interval_seconds),
        startup_time_s=float(spec.scaling.startup_seconds),
        min_requests_for_p99=spec.scaling.min_requests_for_p99,
        slo_margin=spec.scaling.slo_margin,
    )


def history_from_status(status: api.InferenceServiceStatus | None) -> policy.History:
    """The policy's memory as persisted by the previous step (empty for a new service)."""
    if status is None or status.history is None:
        return policy.History()
    saved = status.history

    def when(text: str | None) -> float | None:
        return from_rfc3339(text) if text else None

    return policy.History(
        recommendations=tuple(
            policy.Recommendation(from_rfc3339(r.time), r.replicas, r.max_batch_size)
            for r in saved.recommendations
        ),
        last_scale_up_s=when(saved.last_scale_up_time),
        last_scale_down_s=when(saved.last_scale_down_time),
        last_batch_change_s=when(saved.last_batch_change_time),
        demand_samples=tuple((from_rfc3339(sample.time), sample.qps) for sample in saved.demand_samples),
        latency_correction=saved.latency_correction,
    )


def history_to_status(history: policy.History) -> api.HistoryStatus:
    def when(time_s: float | None) -> str | None:
        return to_rfc3339_ms(time_s) if time_s is not None else None

    return api.HistoryStatus(
        recommendations=[
            api.RecommendationRecord(
                time=to_rfc3339_ms(r.time_s), replicas=r.replicas, max_batch_size=r.max_batch_size
            )
            for r in history.recommendations
        ],
        last_scale_up_time=when(history.last_scale_up_s),
        last_scale_down_time=when(history.last_scale_down_s),
        last_batch_change_time=when(history.last_batch_change_s),
        demand_samples=[
            api.DemandSample(time=to_rfc3339_ms(t), qps=qps) for t, qps in history.demand_samples
        ],
        latency_correction=history.latency_correction,
    )


def set_condition(
    conditions: Sequence[api.Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None,
) -> list[api.Condition]:
    """Replace one condition; its lastTransitionTime moves only when its status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    updated = api.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def condition(conditions: Sequence[api.Condition], type_: ConditionType) -> api.Condition | None:
    return next((c for c in conditions if c.type == type_), None)


# ---------------------------------------------------------------------------------------- the step


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000.0, 3) if seconds is not None else None


def _ready_condition(state: ScaleState) -> tuple[ConditionStatus, str, str]:
    if state.replicas == 0:
        return ConditionStatus.TRUE, Reason.REPLICAS_READY, "scaled to zero replicas"
    if state.ready_replicas >= state.replicas:
        return (
            ConditionStatus.TRUE,
            Reason.REPLICAS_READY,
            f"{state.ready_replicas}/{state.replicas} replicas ready",
        )
    return (
        ConditionStatus.FALSE,
        Reason.REPLICAS_NOT_READY,
        f"{state.ready_replicas}/{state.replicas} replicas ready",
    )


async def control_step(
    service: api.InferenceService,
    reader: MetricsReader,
    actuator: Actuator,
    *,
    now: dt.datetime,
    decide: PolicyFn = policy.decide,
) -> StepResult:
    """Read, decide, act (Auto only), report. Actuator errors other than a missing target propagate.

    ``service.status`` is the previous status: its history and conditions carry over, so a
    restarted operator continues where the last one stopped.
    """
    spec = service.spec
    mode = spec.scaling.mode
    name = service.metadata.name
    namespace = service.metadata.namespace or "default"
    generation = service.metadata.generation
    previous = service.status or api.InferenceServiceStatus()
    now_s = now.timestamp()
    now_text = to_rfc3339(now_s)
    conditions = list(previous.conditions)
    events: list[EventRecord] = []

    def set_(type_: ConditionType, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, type_, status, reason, message, now=now_text, generation=generation
        )

    try:
        state = await actuator.current()
    except LookupError as error:
        was = condition(conditions, ConditionType.READY)
        set_(ConditionType.READY, ConditionStatus.FALSE, Reason.TARGET_NOT_FOUND, str(error))
        if was is None or was.reason != Reason.TARGET_NOT_FOUND:
            events.append(EventRecord("Warning", Reason.TARGET_NOT_FOUND, str(error)))
        status = previous.model_copy(update={"observed_generation": generation, "conditions": conditions})
        return StepResult(status, tuple(events), None, applied=False, metrics_ok=False)

    ready = _ready_condition(state)
    if mode == api.ScalingMode.OFF:
        set_(ConditionType.READY, ready[0], Reason.SCALING_OFF, f"scaling.mode is Off; {ready[2]}")
        status = previous.model_copy(
            update={
                "observed_generation": generation,
                "replicas": state.replicas,
                "ready_replicas": state.ready_replicas,
                "max_batch_size": state.max_batch_size,
                "conditions": conditions,
            }
        )
        return StepResult(status, (), None, applied=False, metrics_ok=False)
    set_(ConditionType.READY, *ready)

    # ① read
    window_s = spec.prometheus.window_seconds
    metric_name = spec.prometheus.service_name or name
    figures: ServiceMetrics | None = None
    read_error: str | None = None
    error_reason = Reason.PROMETHEUS_ERROR
    try:
        figures = await reader.read(
            namespace, metric_name, window_s=window_s, selector=spec.prometheus.selector, now=now_s
        )
        if figures is None:
            read_error = f"no series in Prometheus for namespace={namespace}, inferenceservice={metric_name}"
            error_reason = Reason.NO_SERIES
    except MetricsUnavailable as failure:
        read_error = str(failure)
    snapshot = policy.MetricsSnapshot(
        time_s=now_s,
        window_s=float(window_s),
        qps=figures.qps if figures else None,
        p99_s=figures.p99_s if figures else None,
        request_count=figures.request_count if figures else None,
        ready_replicas=state.ready_replicas,
        current_replicas=state.replicas,
        current_max_batch_size=state.max_batch_size,
        queue_depth=figures.queue_depth if figures else None,
        mean_batch_size=figures.mean_batch_size if figures else None,
        mean_batch_duration_s=figures.mean_batch_duration_s if figures else None,
        profile=policy.Profile(dict(figures.profile)) if figures and figures.profile else None,
        error=read_error,
    )

    was_metrics = condition(conditions, ConditionType.METRICS_AVAILABLE)
    if read_error is not None:
        set_(ConditionType.METRICS_AVAILABLE, ConditionStatus.FALSE, error_reason, read_error)
        if was_metrics is None or was_metrics.status != ConditionStatus.FALSE:
            events.append(
                EventRecord(
                    "Warning", Reason.METRICS_UNAVAILABLE, f"{read_error}; holding {state.replicas} replicas"
                )
            )
    else:
        if figures is not None and not figures.has_traffic:
            set_(
                ConditionType.METRICS_AVAILABLE,
                ConditionStatus.TRUE,
                Reason.NO_TRAFFIC,
                "series present, no requests",
            )
        else:
            set_(ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE, Reason.METRICS_READ, "metrics read")
        if was_metrics is not None and was_metrics.status == ConditionStatus.FALSE:
            events.append(EventRecord("Normal", Reason.METRICS_RECOVERED, "metrics readable again"))

    # ② decide
    history = history_from_status(previous)
    decision = decide(targets_from_spec(spec), snapshot, history)
    replicas, batch = decision.replicas, decision.max_batch_size
    if read_error is not None and replicas < state.replicas:
        replicas = state.replicas  # never lower blind, whatever the policy said
    if read_error is not None:
        batch = state.max_batch_size

    # ③ act
    changed = (replicas, batch) != (state.replicas, state.max_batch_size)
    applied = False
    last_scale_time = previous.last_scale_time
    if changed and mode == api.ScalingMode.AUTO:
        await actuator.apply(replicas=replicas, max_batch_size=batch, reason=decision.reason)
        applied = True
        last_scale_time = now_text
        if replicas != state.replicas:
            events.append(
                EventRecord(
                    "Normal", Reason.SCALED, f"replicas {state.replicas} → {replicas}: {decision.reason}"
                )
            )
        if batch != state.max_batch_size:
            events.append(
                EventRecord(
                    "Normal",
                    Reason.BATCH_SIZE_CHANGED,
                    f"MAX_BATCH_SIZE {state.max_batch_size} → {batch}: {decision.reason}",
                )
            )
    elif changed and mode == api.ScalingMode.DRY_RUN:
        last = previous.last_decision
        if last is None or (last.replicas, last.max_batch_size) != (replicas, batch):
            events.append(
                EventRecord(
                    "Normal",
                    Reason.DRY_RUN_DECISION,
                    f"would set replicas {state.replicas} → {replicas}, MAX_BATCH_SIZE "
                    f"{state.max_batch_size} → {batch}: {decision.reason}",
                )
            )

    # ④ report
    if decision.slo_met is True:
        set_(ConditionType.SLO_MET, ConditionStatus.TRUE, Reason.WITHIN_TARGET, _slo_message(snapshot, spec))
    elif decision.slo_met is False:
        set_(
            ConditionType.SLO_MET, ConditionStatus.FALSE, Reason.TARGET_EXCEEDED, _slo_message(snapshot, spec)
        )
    else:
        set_(
            ConditionType.SLO_MET,
            ConditionStatus.UNKNOWN,
            Reason.INSUFFICIENT_DATA,
            "too few requests in the window",
        )

    was_limited = condition(conditions, ConditionType.SCALING_LIMITED)
    if not decision.target_qps_reachable:
        set_(
            ConditionType.SCALING_LIMITED,
            ConditionStatus.TRUE,
            Reason.TARGET_QPS_UNREACHABLE,
            decision.reason,
        )
    elif decision.limited_by is not None:
        set_(ConditionType.SCALING_LIMITED, ConditionStatus.TRUE, str(decision.limited_by), decision.reason)
    else:
        set_(
            ConditionType.SCALING_LIMITED,
            ConditionStatus.FALSE,
            Reason.WITHIN_BOUNDS,
            "decision within bounds",
        )
    now_limited = condition(conditions, ConditionType.SCALING_LIMITED)
    if (
        now_limited is not None
        and now_limited.reason == Reason.TARGET_QPS_UNREACHABLE
        and (was_limited is None or was_limited.reason != Reason.TARGET_QPS_UNREACHABLE)
    ):
        events.append(EventRecord("Warning", Reason.TARGET_QPS_UNREACHABLE, decision.reason))

    status = api.InferenceServiceStatus(
        observed_generation=generation,
        replicas=replicas if applied else state.replicas,
        ready_replicas=state.ready_replicas,
        desired_replicas=replicas,
        max_batch_size=batch if applied else state.max_batch_size,
        observed=api.ObservedMetrics(
            p99_latency_ms=_ms(snapshot.p99_s),
            qps=round(snapshot.qps, 3) if snapshot.qps is not None else None,
            request_count=snapshot.request_count,
            window_seconds=window_s,
            time=now_text,
        ),
        last_scale_time=last_scale_time,
        last_decision=api.LastDecision(
            time=now_text,
            replicas=replicas,
            max_batch_size=batch,
            reason=decision.reason,
            predicted_p99_latency_ms=_ms(decision.predicted_p99_s),
            capacity_qps=decision.capacity_qps,
            demand_qps=decision.demand_qps,
            limited_by=str(decision.limited_by) if decision.limited_by is not None else None,
            applied=applied,
        ),
        history=history_to_status(decision.history),
        conditions=conditions,
    )
    return StepResult(status, tuple(events), decision, applied=applied, metrics_ok=read_error is None)


def _slo_message(snapshot: policy.MetricsSnapshot, spec: api.InferenceServiceSpec) -> str:
    p99 = _ms(snapshot.p99_s)
    return f"P99 {p99} ms, target {spec.slo.p99_latency_ms:g} ms"
