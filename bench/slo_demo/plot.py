"""The demo's PNG: traffic, P99 against the target, and the two knobs, on one time axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from slo_demo.record import DemoRecord


def plot_record(record: DemoRecord, path: Path) -> Path:
    ticks = record.ticks
    t = [tick.t_s for tick in ticks]
    figure, (traffic, latency, knobs) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    figure.suptitle(f"make demo — {record.profile_name}: P99 target {record.target_p99_s * 1000:.0f} ms")

    traffic.plot(t, [x.offered_qps for x in ticks], label="offered", color="tab:gray", linestyle="--")
    traffic.plot(t, [x.achieved_qps for x in ticks], label="achieved (answered/s)", color="tab:blue")
    failed_t = [x.t_s for x in ticks if x.failed]
    if failed_t:
        traffic.scatter(failed_t, [0.0] * len(failed_t), color="tab:red", marker="x", label="failed requests")
    traffic.set_ylabel("requests / s")
    traffic.legend(loc="upper left")

    def ms(value: float | None) -> float:
        return float("nan") if value is None else value * 1000

    latency.plot(t, [ms(x.p99_s) for x in ticks], label="P99, client, per second", color="tab:orange", lw=0.8)
    latency.plot(
        t,
        [ms(x.controller_p99_s) for x in ticks],
        label="P99, Prometheus window (what the controller reads)",
        color="tab:purple",
    )
    latency.axhline(record.target_p99_s * 1000, color="tab:red", linestyle=":", label="target")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(ScalarFormatter())
    latency.set_ylabel("P99 latency (ms)")
    latency.legend(loc="upper left")

    knobs.step(t, [x.ready_replicas for x in ticks], where="post", label="ready replicas", color="tab:green")
    knobs.step(t, [x.processes for x in ticks], where="post", label="processes", color="tab:olive", lw=0.8)
    knobs.set_ylabel("replicas")
    knobs.set_ylim(0, max([x.processes for x in ticks] + [1]) + 0.5)
    knobs.yaxis.set_major_locator(MaxNLocator(integer=True))
    batch_axis = knobs.twinx()
    batches = [x.max_batch_size for x in ticks]
    batch_axis.step(
        t, [x.max_batch_size for x in ticks], where="post", label="max batch size", color="tab:brown"
    )
    batch_axis.set_ylabel("max batch size")
    batch_axis.set_ylim(0, max([*batches, 1]) * 1.6)
    batch_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    lines = knobs.get_legend_handles_labels()
    batch_lines = batch_axis.get_legend_handles_labels()
    knobs.legend(lines[0] + batch_lines[0], lines[1] + batch_lines[1], loc="upper left")
    knobs.set_xlabel("seconds since the traffic started")

    for axis in (traffic, latency, knobs):
        for decision in record.decisions:
            if decision.changed:
                axis.axvline(decision.t_s, color="black", alpha=0.25, lw=0.8)
        for name, at_s in record.phases.items():
            axis.axvline(at_s, color="tab:gray", alpha=0.5, linestyle="--", lw=0.8)
            if axis is traffic:
                label = name.removesuffix("_s").replace("_", " ")
                where = ("data", "axes fraction")
                axis.annotate(label, (at_s, 0.03), xycoords=where, fontsize=8, rotation=90)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
