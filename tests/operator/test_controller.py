"""The kopf-free control step with the real policy; an in-memory actuator stands in for a Deployment
(the Kubernetes actuator is exercised against kmock in test_operator.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from slo_operator import api, policy
from slo_operator.actuator import ScaleState
from slo_operator.controller import (
    control_step,
    from_rfc3339,
    history_from_status,
    history_to_status,
    set_condition,
)
from slo_operator.prometheus import MetricsUnavailable, ServiceMetrics

from .conftest import busy_figures

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@dataclass
class MemoryActuator:
    state: ScaleState = field(
        default_factory=lambda: ScaleState(replicas=2, ready_replicas=2, max_batch_size=8)
    )
    applied: list[tuple[int, int, str]] = field(default_factory=list)
    missing: bool = False

    async def current(self) -> ScaleState:
        if self.missing:
            raise LookupError("Deployment ns/svc not found")
        return self.state

    async def apply(self, *, replicas: int, max_batch_size: int, reason: str) -> None:
        self.applied.append((replicas, max_batch_size, reason))
        self.state = ScaleState(replicas, self.state.ready_replicas, max_batch_size)


@dataclass
class FixedReader:
    result: ServiceMetrics | Exception | None

    async def read(
        self, namespace: str, name: str, *, window_s: int, selector: Mapping[str, str], now: float
    ) -> ServiceMetrics | None:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def service(
    mode: str = "Auto", status: api.InferenceServiceStatus | None = None, **spec: Any
) -> api.InferenceService:
    body: dict[str, Any] = {
        "slo": {"p99LatencyMs": 100},
        "replicas": {"min": 1, "max": 10},
        "scaling": {"mode": mode},
        "model": {"image": "x"},
        **spec,
    }
    isvc = api.InferenceService.model_validate(
        {"metadata": {"name": "svc", "namespace": "ns", "generation": 3}, "spec": body}
    )
    return isvc.model_copy(update={"status": status})


def conditions(result: Any) -> dict[str, api.Condition]:
    return {c.type.value: c for c in result.status.conditions}


async def test_auto_scales_up_in_one_write_and_reports() -> None:
    actuator = MemoryActuator()
    result = await control_step(service(), FixedReader(busy_figures(qps=3000)), actuator, now=T0)
    assert len(actuator.applied) == 1
    replicas, batch, reason = actuator.applied[0]
    assert replicas > 2
    assert reason
    assert result.applied
    assert result.metrics_ok
    assert result.status.replicas == replicas
    assert result.status.max_batch_size == batch
    assert result.status.observed_generation == 3
    assert result.status.last_scale_time == "2026-01-01T12:00:00Z"
    assert result.status.history is not None
    assert result.status.history.recommendations
    assert next(e.reason for e in result.events) == api.Reason.SCALED
    assert conditions(result)["MetricsAvailable"].status == "True"


async def test_metrics_unavailable_holds_replicas_and_warns_once() -> None:
    actuator = MemoryActuator(state=ScaleState(replicas=6, ready_replicas=6, max_batch_size=8))
    reader = FixedReader(MetricsUnavailable("Prometheus at http://p unreachable: ConnectionError"))
    first = await control_step(service(), reader, actuator, now=T0)
    assert actuator.applied == []
    assert not first.metrics_ok
    cond = conditions(first)["MetricsAvailable"]
    assert (cond.status, cond.reason) == ("False", api.Reason.PROMETHEUS_ERROR)
    assert [e.type for e in first.events if e.reason == api.Reason.METRICS_UNAVAILABLE] == ["Warning"]
    second = await control_step(
        service(status=first.status), reader, actuator, now=T0 + dt.timedelta(seconds=15)
    )
    assert [e for e in second.events if e.reason == api.Reason.METRICS_UNAVAILABLE] == []
    assert conditions(second)["MetricsAvailable"].last_transition_time == cond.last_transition_time


async def test_never_lowers_blind_whatever_the_policy_says() -> None:
    def eager(
        targets: policy.Targets, snapshot: policy.MetricsSnapshot, history: policy.History
    ) -> policy.Decision:
        return policy.Decision(replicas=1, max_batch_size=1, reason="a careless policy")

    actuator = MemoryActuator(state=ScaleState(replicas=6, ready_replicas=6, max_batch_size=8))
    result = await control_step(service(), FixedReader(None), actuator, now=T0, decide=eager)
    assert actuator.applied == []
    assert conditions(result)["MetricsAvailable"].reason == api.Reason.NO_SERIES


async def test_dry_run_and_off_change_nothing() -> None:
    actuator = MemoryActuator()
    dry = await control_step(service("DryRun"), FixedReader(busy_figures(qps=3000)), actuator, now=T0)
    assert actuator.applied == []
    assert not dry.applied
    assert dry.status.last_decision is not None
    assert dry.status.last_decision.replicas > 2
    assert [e.reason for e in dry.events] == [api.Reason.DRY_RUN_DECISION]
    off = await control_step(service("Off"), FixedReader(MetricsUnavailable("never asked")), actuator, now=T0)
    assert actuator.applied == []
    assert off.decision is None
    assert off.events == ()
    assert conditions(off)["Ready"].reason == api.Reason.SCALING_OFF


async def test_missing_target_is_reported_not_raised() -> None:
    result = await control_step(
        service(), FixedReader(busy_figures(100)), MemoryActuator(missing=True), now=T0
    )
    assert conditions(result)["Ready"].reason == api.Reason.TARGET_NOT_FOUND
    assert [e.type for e in result.events] == ["Warning"]


def test_condition_keeps_its_transition_time_while_unchanged() -> None:
    first = set_condition(
        [], api.ConditionType.SLO_MET, api.ConditionStatus.TRUE, "WithinTarget", "", now="t1", generation=1
    )
    same = set_condition(
        first,
        api.ConditionType.SLO_MET,
        api.ConditionStatus.TRUE,
        "WithinTarget",
        "x",
        now="t2",
        generation=1,
    )
    flipped = set_condition(
        same,
        api.ConditionType.SLO_MET,
        api.ConditionStatus.FALSE,
        "TargetExceeded",
        "",
        now="t3",
        generation=1,
    )
    assert same[0].last_transition_time == "t1"
    assert flipped[0].last_transition_time == "t3"


def test_history_survives_the_round_trip_through_status() -> None:
    t = T0.timestamp()
    history = policy.History(
        recommendations=(policy.Recommendation(t - 10.5, 4, 16), policy.Recommendation(t, 5, 16)),
        last_scale_up_s=t,
        last_batch_change_s=t - 100.25,
        demand_samples=((t - 2.5, 100.0), (t, 120.0)),
        latency_correction=1.3,
    )
    saved = history_to_status(history)
    status = api.InferenceServiceStatus.model_validate(
        {"history": saved.model_dump(by_alias=True, mode="json")}
    )
    assert history_from_status(status) == history
    assert from_rfc3339("2026-01-01T12:00:00Z") == pytest.approx(t)
