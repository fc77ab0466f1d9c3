"""One PNG per trace: demand, replicas, batch size and per-minute P99 against the target, per policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from model_server.loadgen.traces import RateProfile
from slo_sim.score import minute_p99s

if TYPE_CHECKING:
    from slo_sim.bench import TraceOutcome


def plot_trace(outcome: TraceOutcome, profile: RateProfile, output: Path, target_s: float) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    minutes = np.arange(len(profile.rates_qps)) * profile.step_s / 60
    axes[0].plot(minutes, profile.rates_qps, color="black", linewidth=0.8, label="offered rate")
    axes[0].set_ylabel("demand (qps)")
    oracle_minutes = np.arange(len(outcome.oracle.replicas)) * outcome.oracle.window_s / 60
    axes[1].step(
        oracle_minutes, outcome.oracle.replicas, where="post", color="grey", linestyle="--", label="oracle"
    )
    for run in outcome.runs:
        t = np.asarray(run.timeline.time_s) / 60
        axes[1].step(t, run.timeline.replicas, where="post", label=run.policy)
        axes[2].step(t, run.timeline.batch, where="post", label=run.policy)
        p99 = np.asarray(minute_p99s(run)) * 1e3
        p99 = np.where(np.isfinite(p99), p99, np.nan)
        axes[3].plot(np.arange(len(p99)) + 0.5, p99, marker=".", linewidth=0.8, label=run.policy)
    axes[1].set_ylabel("replicas")
    axes[2].set_ylabel("max batch size")
    axes[2].set_yscale("log", base=2)
    axes[3].axhline(target_s * 1e3, color="red", linestyle=":", label="P99 target")
    axes[3].set_ylabel("P99 per minute (ms)")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("minutes")
    axes[1].legend(loc="upper left", fontsize=8, ncol=3)
    axes[3].legend(loc="upper left", fontsize=8, ncol=3)
    fig.suptitle(f"{outcome.trace}: policies against the oracle")
    fig.tight_layout()
    path = output / f"{outcome.trace}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
