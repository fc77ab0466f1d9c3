"""The end of a run: the summary lines printed, and the short markdown report beside the plot."""

from __future__ import annotations

from pathlib import Path

from slo_demo.record import RECOVERY_RUN, DemoRecord, Summary, format_seconds, step_milestones


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def _after(at_s: float | None, origin_s: float) -> str:
    return "never" if at_s is None else f"+{at_s - origin_s:.0f} s"


def milestone_lines(record: DemoRecord) -> list[str]:
    steps = step_milestones(record)
    if steps is None:
        return []
    up = steps.step_up_s
    return [
        f"step up at {up:.0f} s: more replicas asked {_after(steps.scaled_up_at_s, up)}, "
        f"ready {_after(steps.ready_up_at_s, up)} (peak {steps.peak_replicas}); client P99 back "
        f"under the target for {RECOVERY_RUN} s in a row {_after(steps.p99_recovered_at_s, up)}",
        f"step down at {steps.step_down_s:.0f} s: fewer replicas asked "
        f"{_after(steps.scaled_down_at_s, steps.step_down_s)}",
    ]


def summary_lines(record: DemoRecord, summary: Summary) -> list[str]:
    startup = "–" if summary.median_startup_s is None else f"{summary.median_startup_s:.1f} s"
    failures = ", ".join(f"{kind}={count}" for kind, count in sorted(record.failures_by_kind.items()))
    return [
        f"SLO attainment: {_percent(summary.slo_attainment)} of 1-s intervals with client-side P99 <= "
        f"{format_seconds(record.target_p99_s)}; {_percent(summary.controller_slo_attainment)} of control "
        "steps with the Prometheus P99 within the target",
        f"replica-seconds: {summary.replica_seconds:.0f} over {summary.duration_s:.0f} s "
        f"(peak {summary.peak_replicas} ready replicas); median cold start {startup}",
        f"scale events: {summary.scale_events} decisions acted on "
        f"({summary.batch_changes} batch-size changes)",
        f"requests: sent {summary.sent}, answered {summary.answered}, failed {summary.failed}"
        + (f" ({failures})" if failures else ""),
        *milestone_lines(record),
    ]


def write_report(record: DemoRecord, summary: Summary, path: Path, plot_path: Path) -> Path:
    acted = [d for d in record.decisions if d.changed]
    rows = "\n".join(
        f"| {d.t_s:.0f} | {d.replicas} | {d.max_batch_size} | {format_seconds(d.observed_p99_s)} | "
        f"{'–' if d.observed_qps is None else f'{d.observed_qps:.0f}'} | {d.reason} |"
        for d in acted
    )
    sizing = "\n".join(f"- `{key}`: {value}" for key, value in record.sizing.items())
    lines = "\n".join(f"- {line}" for line in summary_lines(record, summary))
    phases = ", ".join(
        f"{name.removesuffix('_s').replace('_', ' ')} at {t:.0f} s" for name, t in record.phases.items()
    )
    text = f"""# `make demo` report

Profile: **{record.profile_name}**{f" ({phases})" if phases else ""}; P99 target
{format_seconds(record.target_p99_s)}.{" **Interrupted before the end.**" if record.interrupted else ""}

![the run]({plot_path.name})

## Summary

{lines}

## Decisions that changed something

| t (s) | replicas | max batch | P99 seen | qps seen | reason |
| --- | --- | --- | --- | --- | --- |
{rows or "| – | – | – | – | – | no change was needed |"}

## Sizing

{sizing}

Series: `series.json` (every 1-s tick and every decision); replica and Prometheus logs: `logs/`.
"""
    path.write_text(text)
    return path
