"""``make bench-policy``: every policy on every trace; a table, one PNG per trace, and a summary line.

    python -m slo_sim.bench [--quick] [--output bench-out] [--traces step,diurnal,...]

Service times are the bundled model's measured profile (``profiles/ranking-cpu.json``, see its
``machine`` and ``measured_at``); the real traces are read from ``../shared/traces/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_server.loadgen import traces
from slo_operator.policy import Targets, candidate_batches
from slo_sim.fleet import ServerSpec
from slo_sim.oracle import OracleResult, fewest_replicas, oracle
from slo_sim.policies import HpaPolicy, KedaPolicy, KpaPolicy, SloPolicy, StaticPolicy
from slo_sim.score import Score, dominates, score
from slo_sim.simulate import Policy, RunResult, SimConfig, simulate

PROFILE_PATH = Path(__file__).parent / "profiles" / "ranking-cpu.json"
SERVER_DEFAULT_BATCH = 32
"""``MAX_BATCH_SIZE`` the model server starts with; the baselines never change it."""
SERVER_DEFAULT_DELAY_S = 0.002
SERVER_DEFAULT_QUEUE = 1024
P99_TARGET_S = 0.025
PEAK_QPS = 6000.0


def load_profile(path: Path = PROFILE_PATH) -> dict[int, float]:
    record = json.loads(path.read_text())
    return {int(size): float(seconds) for size, seconds in record["batch_duration_s"].items()}


def bench_traces(quick: bool) -> dict[str, traces.RateProfile]:
    """The synthetic shapes and the two real traces, all scaled to ``PEAK_QPS``."""
    minutes = 0.5 if quick else 1.0
    functions = traces.shared_trace(traces.AZURE_FUNCTIONS_PER_MINUTE, name="azure-functions")
    code = traces.shared_trace(traces.AZURE_CODE_PER_SECOND, name="azure-code")
    shapes = {
        "step": traces.step(PEAK_QPS / 4, PEAK_QPS, at_s=300 * minutes, duration_s=1200 * minutes),
        "diurnal": traces.diurnal(
            PEAK_QPS / 10, PEAK_QPS, period_s=1800 * minutes, duration_s=1800 * minutes
        ),
        "on-off": traces.on_off(
            PEAK_QPS, PEAK_QPS / 10, on_s=120, off_s=240, duration_s=1800 * minutes, step_s=1.0
        ),
        # The evening rise of the day, with its isolated one-minute spikes (minutes 990..1050).
        "azure-functions": functions.window(990 * 60, 3600 * minutes).scaled_to_peak(PEAK_QPS),
        # Bursty on/off: 10-s resolution keeps the bursts and idle gaps (1-s peaks are single-second noise).
        "azure-code": code.resampled(10.0).window(0, 3600 * minutes).scaled_to_peak(PEAK_QPS),
    }
    return {name: _renamed(profile, name) for name, profile in shapes.items()}


def _renamed(profile: traces.RateProfile, name: str) -> traces.RateProfile:
    return traces.RateProfile(name, profile.step_s, profile.rates_qps)


@dataclass
class TraceOutcome:
    trace: str
    oracle: OracleResult
    scores: list[Score]
    runs: list[RunResult]


def run_trace(
    profile: traces.RateProfile, spec: ServerSpec, targets: Targets, config: SimConfig
) -> TraceOutcome:
    arrivals = traces.arrival_times(profile, config.seed)
    duration = profile.duration_s
    batches = candidate_batches(targets)
    best = oracle(
        arrivals,
        duration,
        spec,
        targets.p99_target_s,
        batches,
        min_replicas=targets.min_replicas,
        max_replicas=targets.max_replicas,
        seed=config.seed,
    )
    service = spec.service_times(SERVER_DEFAULT_BATCH)

    def need(window_index: int) -> int:
        start, end = window_index * 60.0, (window_index + 1) * 60.0
        mine = arrivals[(arrivals >= start) & (arrivals < end)]
        n = fewest_replicas(
            mine,
            SERVER_DEFAULT_BATCH,
            spec,
            targets.p99_target_s,
            targets.max_replicas,
            config.seed,
            service,
            best.replicas[window_index],
        )
        return n if n is not None else targets.max_replicas

    # Static provisioning is sized on the busiest windows at the server's default batch size.
    per_window = np.bincount((arrivals // 60).astype(np.int64), minlength=len(best.replicas))
    busiest = [int(w) for w in np.argsort(-per_window, kind="stable")[:3] if w < len(best.replicas)]
    static_replicas = max(need(w) for w in busiest)
    initial = need(0)
    peak_rate = max(profile.rates_qps)
    # Provisioned for the peak from the first second.
    static = simulate(
        StaticPolicy(static_replicas, SERVER_DEFAULT_BATCH),
        arrivals,
        duration,
        spec,
        config,
        static_replicas,
        SERVER_DEFAULT_BATCH,
    )
    # KEDA's threshold and Knative's concurrency target, as an operator would set them from a load test:
    # what one replica carried at the peak while meeting the SLO (static provisioning is that test).
    busiest_minute = busiest[0]
    minute = slice(busiest_minute * 60, (busiest_minute + 1) * 60)
    per_replica_concurrency = float(static.recorder.latency_sum[minute].sum()) / 60.0 / static_replicas
    kpa_target = per_replica_concurrency / 0.7
    policies: list[Policy] = [
        SloPolicy(targets),
        HpaPolicy(SERVER_DEFAULT_BATCH, targets.min_replicas, targets.max_replicas),
        KedaPolicy(
            SERVER_DEFAULT_BATCH, peak_rate / static_replicas, targets.min_replicas, targets.max_replicas
        ),
        KpaPolicy(SERVER_DEFAULT_BATCH, kpa_target, targets.min_replicas, targets.max_replicas),
    ]
    runs = [simulate(p, arrivals, duration, spec, config, initial, SERVER_DEFAULT_BATCH) for p in policies]
    runs.append(static)
    scores = [score(run, profile.name, targets.p99_target_s, best.replica_seconds) for run in runs]
    return TraceOutcome(profile.name, best, scores, runs)


def format_table(outcomes: Sequence[TraceOutcome], target_s: float) -> str:
    header = (
        f"{'trace':<16} {'policy':<16} {'attain':>7} {'rep-s':>9} {'vs-orc':>6} {'events':>6} "
        f"{'worst-p99':>9} {'shed':>7} {'dominated':>9}"
    )
    lines = [header, "-" * len(header)]
    for outcome in outcomes:
        ours = outcome.scores[0]
        lines.append(
            f"{outcome.trace:<16} {'oracle':<16} {'-':>7} {outcome.oracle.replica_seconds:>9.0f} {1.0:>6.2f} "
            f"{'-':>6} {'-':>9} {'-':>7} {'':>9}"
        )
        for s in outcome.scores:
            worst = f"{s.worst_p99_s * 1e3:.0f}ms" if math.isfinite(s.worst_p99_s) else "shed"
            mark = "" if s is ours else ("yes" if dominates(ours, s) else "no")
            lines.append(
                f"{outcome.trace:<16} {s.policy:<16} {s.attainment * 100:>6.1f}% {s.replica_seconds:>9.0f} "
                f"{s.cost_vs_oracle:>6.2f} {s.scale_events:>6} {worst:>9} {s.shed:>7} {mark:>9}"
            )
    lines.append(f"(P99 target {target_s * 1e3:.0f} ms; attainment = share of 1-minute windows within it)")
    return "\n".join(lines)


def summary_line(outcomes: Sequence[TraceOutcome]) -> str:
    ours = [o.scores[0] for o in outcomes]
    baselines = [s.policy for s in outcomes[0].scores[1:]]
    dominated = sum(
        1
        for index, _ in enumerate(baselines)
        if all(dominates(o.scores[0], o.scores[index + 1]) for o in outcomes)
    )
    worst = min(s.attainment for s in ours) * 100
    cost = max(s.cost_vs_oracle for s in ours)
    return (
        f"bench-policy: worst_attainment={worst:.1f}% cost_vs_oracle={cost:.2f}x "
        f"dominated_baselines={dominated}/{len(baselines)}"
    )


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description="Simulate every policy on every trace.")
    parser.add_argument("--quick", action="store_true", help="half-length traces")
    parser.add_argument("--output", type=Path, default=Path("bench-out"), help="where the PNGs go")
    parser.add_argument("--traces", default="", help="comma-separated subset of trace names")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--headroom", type=float, default=0.2, help="the policy's headroom (CRD default 0.2)")
    parser.add_argument(
        "--slo-margin", type=float, default=0.8, help="the policy's SLO margin (CRD default 0.8)"
    )
    parser.add_argument(
        "--stabilisation", type=float, default=300.0, help="scale-down stabilisation, s (CRD default 300)"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    profile = load_profile()
    spec = ServerSpec(profile, SERVER_DEFAULT_DELAY_S, SERVER_DEFAULT_QUEUE)
    targets = Targets(
        p99_target_s=P99_TARGET_S,
        min_replicas=1,
        max_replicas=40,
        min_batch_size=1,
        max_batch_size=SERVER_DEFAULT_BATCH,
        max_batch_delay_s=SERVER_DEFAULT_DELAY_S,
        startup_time_s=30.0,
        headroom=args.headroom,
        slo_margin=args.slo_margin,
        scale_down_stabilisation_s=args.stabilisation,
    )
    config = SimConfig(startup_s=30.0, p99_target_s=P99_TARGET_S, seed=args.seed)
    chosen = bench_traces(args.quick)
    if args.traces:
        wanted = [name.strip() for name in args.traces.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in chosen]
        if unknown:
            parser.error(f"unknown trace(s) {', '.join(unknown)}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in wanted}
    out(
        f"policy settings: headroom {targets.headroom}, slo margin {targets.slo_margin}, "
        f"scale-down stabilisation {targets.scale_down_stabilisation_s:.0f} s, "
        f"start-up {config.startup_s:.0f} s"
    )
    out(f"profile: {PROFILE_PATH.name} {json.dumps({k: round(v * 1e3, 2) for k, v in profile.items()})} (ms)")
    outcomes = []
    for name, rate_profile in chosen.items():
        began = time.perf_counter()
        outcome = run_trace(rate_profile, spec, targets, config)
        outcomes.append(outcome)
        simulated = sum(r.requests for r in outcome.runs)
        sim_wall = sum(r.wall_s for r in outcome.runs)
        out(
            f"trace {name}: {rate_profile.duration_s / 60:.0f} min, {outcome.runs[0].requests} requests; "
            f"simulated {simulated / sim_wall:,.0f} requests/s of wall time (all policies); "
            f"trace total {time.perf_counter() - began:.1f} s"
        )
        if not args.no_plots:
            from slo_sim.plot import plot_trace  # matplotlib only when plotting

            path = plot_trace(outcome, rate_profile, args.output, P99_TARGET_S)
            out(f"  wrote {path}")
    out("")
    out(format_table(outcomes, P99_TARGET_S))
    speeds = [r.requests / r.wall_s for o in outcomes for r in o.runs if r.wall_s > 0]
    speeds.sort()
    out(
        f"simulator speed: median {speeds[len(speeds) // 2]:,.0f} requests/s of wall time "
        f"(min {speeds[0]:,.0f}) over {len(speeds)} runs; bench took {time.perf_counter() - started:.0f} s"
    )
    out(summary_line(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
