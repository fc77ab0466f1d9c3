"""What one demo run recorded, its summary, and the JSON file the loop test reads.

Pure: no processes, no clock. The loop appends ``Tick`` and ``DecisionRow`` values as they
happen; everything printed, plotted or asserted at the end is computed from these series.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Tick:
    """One load generator interval (about a second), with the actuator's state at its end."""

    t_s: float
    """Seconds since the traffic profile started (end of the interval)."""
    offered_qps: float
    """The profile's rate in this interval."""
    sent_qps: float
    achieved_qps: float
    """Answered (2xx) per second."""
    p99_s: float | None
    """Client-side P99 of the requests answered in this interval (None when none were)."""
    failed: int
    """Requests that failed in this interval (error, timeout or non-200)."""
    replicas: int
    """Replicas asked for."""
    ready_replicas: int
    processes: int
    """Model server processes alive (starting and draining ones too: what the machine pays for)."""
    max_batch_size: int
    controller_p99_s: float | None = None
    """The last P99 the controller read from Prometheus (its rate window, all replicas)."""


@dataclass(frozen=True)
class DecisionRow:
    t_s: float
    replicas: int
    max_batch_size: int
    reason: str
    changed: bool
    """The decision differs from what was running: the actuator was asked to act."""
    observed_p99_s: float | None
    observed_qps: float | None
    limited_by: str | None = None


@dataclass
class DemoRecord:
    """Everything a run produced; ``demo-out/series.json``."""

    target_p99_s: float
    profile_name: str
    phases: dict[str, float]
    """Named instants of the profile in seconds (``step_up_s``, ``step_down_s`` for the built-in one)."""
    sizing: dict[str, Any]
    ticks: list[Tick] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    actuator_events: list[dict[str, Any]] = field(default_factory=list)
    kubernetes_events: list[dict[str, Any]] = field(default_factory=list)
    """The Events the controller would post in a cluster (type, reason, message), with their time."""
    startup_times_s: list[float] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    failed: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    started_pids: list[int] = field(default_factory=list)
    interrupted: bool = False

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @staticmethod
    def read_json(path: Path) -> DemoRecord:
        raw = json.loads(path.read_text())
        raw["ticks"] = [Tick(**t) for t in raw["ticks"]]
        raw["decisions"] = [DecisionRow(**d) for d in raw["decisions"]]
        return DemoRecord(**raw)


@dataclass(frozen=True)
class Summary:
    duration_s: float
    slo_attainment: float | None
    """Fraction of 1-s intervals with answers whose client-side P99 met the target."""
    controller_slo_attainment: float | None
    """Fraction of control steps whose Prometheus P99 (the controller's view) met the target."""
    replica_seconds: float
    peak_replicas: int
    scale_events: int
    batch_changes: int
    sent: int
    answered: int
    failed: int
    median_startup_s: float | None


def summarise(record: DemoRecord) -> Summary:
    ticks = record.ticks
    with_answers = [t for t in ticks if t.p99_s is not None]
    met = [t for t in with_answers if t.p99_s is not None and t.p99_s <= record.target_p99_s]
    judged = [d for d in record.decisions if d.observed_p99_s is not None]
    controller_met = [
        d for d in judged if d.observed_p99_s is not None and d.observed_p99_s <= record.target_p99_s
    ]
    replica_seconds = 0.0
    previous_t = 0.0
    for tick in ticks:
        replica_seconds += tick.processes * max(0.0, tick.t_s - previous_t)
        previous_t = tick.t_s
    changes = [d for d in record.decisions if d.changed]
    batch_changes = 0
    previous_batch: int | None = None
    for tick in ticks:
        if previous_batch is not None and tick.max_batch_size != previous_batch:
            batch_changes += 1
        previous_batch = tick.max_batch_size
    startups = sorted(record.startup_times_s)
    return Summary(
        duration_s=ticks[-1].t_s if ticks else 0.0,
        slo_attainment=len(met) / len(with_answers) if with_answers else None,
        controller_slo_attainment=len(controller_met) / len(judged) if judged else None,
        replica_seconds=replica_seconds,
        peak_replicas=max((t.ready_replicas for t in ticks), default=0),
        scale_events=len(changes),
        batch_changes=batch_changes,
        sent=record.sent,
        answered=record.answered,
        failed=record.failed,
        median_startup_s=startups[len(startups) // 2] if startups else None,
    )


@dataclass(frozen=True)
class StepMilestones:
    """How the loop answered the built-in profile's step up and step down (seconds from the start)."""

    step_up_s: float
    step_down_s: float
    replicas_before: int
    peak_replicas: int
    """Most replicas asked for between the step up and the step down."""
    scaled_up_at_s: float | None
    """First tick after the step up asking for more replicas than before it."""
    ready_up_at_s: float | None
    """First tick after the step up with more ready replicas than before it."""
    p99_recovered_at_s: float | None
    """First tick after the step up that starts ``RECOVERY_RUN`` seconds in a row with the client-side
    P99 within the target (one noisy second later does not undo it)."""
    scaled_down_at_s: float | None
    """First tick after the step down asking for fewer replicas than the peak."""


RECOVERY_RUN = 5


def step_milestones(record: DemoRecord) -> StepMilestones | None:
    """None when the profile has no step (a trace)."""
    if "step_up_s" not in record.phases or "step_down_s" not in record.phases:
        return None
    up, down = record.phases["step_up_s"], record.phases["step_down_s"]
    ticks = record.ticks
    before = [t for t in ticks if t.t_s <= up]
    replicas_before = before[-1].replicas if before else (ticks[0].replicas if ticks else 0)
    ready_before = before[-1].ready_replicas if before else replicas_before
    high = [t for t in ticks if up < t.t_s <= down]
    peak = max((t.replicas for t in high), default=replicas_before)

    def first(predicate: Any, after: float) -> float | None:
        return next((t.t_s for t in ticks if t.t_s > after and predicate(t)), None)

    recovered: float | None = None
    for index, tick in enumerate(ticks):
        if tick.t_s <= up:
            continue
        run = ticks[index : index + RECOVERY_RUN]
        if len(run) == RECOVERY_RUN and all(
            t.p99_s is not None and t.p99_s <= record.target_p99_s for t in run
        ):
            recovered = tick.t_s
            break
    return StepMilestones(
        step_up_s=up,
        step_down_s=down,
        replicas_before=replicas_before,
        peak_replicas=peak,
        scaled_up_at_s=first(lambda t: t.replicas > replicas_before, up),
        ready_up_at_s=first(lambda t: t.ready_replicas > ready_before, up),
        p99_recovered_at_s=recovered,
        scaled_down_at_s=first(lambda t: t.replicas < peak, down),
    )


def format_seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value * 1000:.0f} ms"
