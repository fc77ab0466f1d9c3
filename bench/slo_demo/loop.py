"""The whole loop on one machine: Prometheus, model server processes, the controller, the load.

Every moving part is the real one: ``/usr/bin/prometheus`` scrapes ``python -m model_server``
processes that the operator's ``LocalActuator`` starts and stops; every few seconds the
operator's own control step (``slo_operator.controller``: Prometheus reader → policy → actuator)
runs against them; the project's open-loop load generator replays the traffic profile across the
ready replicas. The demo only wires them together, watches and records.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model_server.loadgen import IntervalStats, fetch_request_body, run_load
from model_server.loadgen.traces import arrival_times
from slo_contract import env as contract_env
from slo_demo.control import DemoController, StepOutcome
from slo_demo.manifest import load_manifest
from slo_demo.profiles import Calibration, DemoTraffic, StepShape, calibrate, trace_traffic
from slo_demo.prometheus_server import PrometheusServer
from slo_demo.record import DecisionRow, DemoRecord, Tick
from slo_demo.view import View
from slo_operator.local_actuator import (
    ActuatorEvent,
    EventKind,
    LocalActuator,
    LocalServiceConfig,
    free_port,
)

FULL_SHAPE = StepShape(factor=3.0, baseline_s=40.0, high_s=80.0, low_s=60.0)
QUICK_SHAPE = StepShape(factor=3.0, baseline_s=10.0, high_s=40.0, low_s=40.0)
"""Durations only: the rates come from the first replica's start-up profile (``profiles.calibrate``)."""

SIZING_NOTE = (
    "sizing: each replica is pinned to its own core (TORCH_NUM_THREADS=1); batching.maxBatchSize caps "
    "what one replica can absorb below the x3 step, so the controller must add the second replica; "
    "replicas.max = 2 for 2 cores (a third would share a core and add nothing); the rates come from the "
    "first replica's start-up profile (docs/demo.md)."
)


@dataclass(frozen=True)
class DemoOptions:
    manifest: Path
    out_dir: Path
    quick: bool = False
    profile: str = "builtin"
    """``builtin`` or the path of a trace file (the simulator's formats)."""
    seed: int = 1
    initial_max_batch_size: int | None = None
    """MAX_BATCH_SIZE the first replica starts with; None: the manifest's batching.minBatchSize."""
    baseline_qps: float | None = None
    """None: sized from the first replica's start-up profile (see ``profiles.calibrate``)."""


@dataclass(frozen=True)
class DemoPaths:
    series: Path
    plot: Path
    report: Path
    pids: Path
    logs: Path


def demo_paths(out_dir: Path) -> DemoPaths:
    return DemoPaths(
        series=out_dir / "series.json",
        plot=out_dir / "demo.png",
        report=out_dir / "report.md",
        pids=out_dir / "pids.txt",
        logs=out_dir / "logs",
    )


def replica_cpus(max_replicas: int) -> list[int] | None:
    """One core per replica, the highest-numbered first; None when there are fewer than 2 cores."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return list(reversed(available))[: max(1, min(max_replicas, len(available)))]


def choose_traffic(options: DemoOptions, calibration: Calibration) -> DemoTraffic:
    shape = QUICK_SHAPE if options.quick else FULL_SHAPE
    if options.profile == "builtin":
        return shape.traffic(calibration.baseline_qps)
    return trace_traffic(Path(options.profile), peak_qps=calibration.peak_qps, duration_s=shape.duration_s)


async def run_demo(options: DemoOptions, view: View) -> tuple[DemoRecord, DemoPaths]:
    """Run the loop; always stops every process it started, also when cancelled (Ctrl-C)."""
    service = load_manifest(options.manifest)
    spec = service.spec
    assert spec.model is not None  # load_manifest refuses a manifest without one
    model_name = spec.model.model_name or spec.model.bundled_model or "model"
    paths = demo_paths(options.out_dir)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths.logs, ignore_errors=True)
    paths.logs.mkdir()
    paths.pids.write_text("")
    for stale in (paths.series, paths.plot, paths.report):
        stale.unlink(missing_ok=True)

    cpus = replica_cpus(spec.replicas.max)
    spare = sorted(os.sched_getaffinity(0) - set(cpus or ()))
    if cpus and spare:
        # More cores than replicas (a 4-core CI runner): the load generator, the controller and
        # Prometheus (started from here, so it inherits this) keep off the replicas' cores.
        os.sched_setaffinity(0, spare)
    record = DemoRecord(
        target_p99_s=spec.slo.p99_latency_ms / 1000,
        profile_name=options.profile,
        phases={},
        sizing={
            "cpus": os.cpu_count(),
            "replica_cpus": cpus,
            "other_cpus": spare if cpus and spare else "shared with the replicas",
            "model": spec.model.bundled_model,
            "max_replicas": spec.replicas.max,
            "batch_bounds": [spec.batching.min_batch_size, spec.batching.max_batch_size],
            "max_batch_delay_ms": spec.batching.max_batch_delay_ms,
            "interval_s": spec.scaling.interval_seconds,
            "window_s": spec.prometheus.window_seconds,
            "startup_seconds_in_manifest": spec.scaling.startup_seconds,
            "note": SIZING_NOTE,
        },
    )
    namespace = service.metadata.namespace or "default"

    def remember_pid(pid: int) -> None:
        record.started_pids.append(pid)
        with paths.pids.open("a") as handle:
            handle.write(f"{pid}\n")

    def on_actuator_event(event: ActuatorEvent) -> None:
        record.actuator_events.append({**asdict(event), "kind": event.kind.value})
        if event.kind is EventKind.SPAWNED:
            pid = next((r.process.pid for r in actuator.replicas if r.name == event.replica), None)
            if pid is not None:
                remember_pid(pid)
        if event.kind in (EventKind.READY, EventKind.REMOVED, EventKind.EXITED, EventKind.FAILED):
            view.message(f"  actuator: {event.replica or ''} {event.kind.value} {event.detail}")

    server_env = {
        contract_env.MODEL: spec.model.bundled_model or "ranking",
        contract_env.MAX_BATCH_DELAY_MS: f"{spec.batching.max_batch_delay_ms:g}",
        contract_env.PROFILE_MAX_BATCH_SIZE: str(spec.batching.max_batch_size),
        contract_env.TORCH_NUM_THREADS: "1",
        "OMP_NUM_THREADS": "1",
        **{variable.name: variable.value for variable in spec.model.env},
    }
    file_sd = paths.logs / "targets.json"
    actuator = LocalActuator(
        LocalServiceConfig(
            namespace=namespace,
            name=service.metadata.name,
            model_name=model_name,
            server_env=server_env,
            work_dir=paths.logs,
            file_sd_path=file_sd,
            cpus=cpus,
            # The pod's preStop pause and grace period, as the kubelet would apply them.
            drain_pause_s=float(spec.model.pre_stop_seconds),
            drain_timeout_s=float(spec.model.termination_grace_period_seconds),
        ),
        on_event=on_actuator_event,
    )
    with tempfile.TemporaryDirectory(prefix="slo-demo-prometheus-") as prometheus_dir:
        prometheus = PrometheusServer(Path(prometheus_dir), file_sd, port=free_port(), scrape_interval_s=1.0)
        atexit.register(prometheus.kill_now)  # the local actuator registers its own replicas
        try:
            view.message(f"starting Prometheus ({prometheus.url}) …")
            await prometheus.start()
            if prometheus.pid is not None:
                remember_pid(prometheus.pid)
            await _run_with_parts(options, service, actuator, prometheus.url, record, view, model_name)
        except asyncio.CancelledError:
            record.interrupted = True
            raise
        finally:
            # Shielded: a second Ctrl-C must not leave processes behind.
            await asyncio.shield(_stop_everything(actuator, prometheus))
            atexit.unregister(prometheus.kill_now)
            record.startup_times_s = [r.startup_s for r in actuator.replicas if r.startup_s is not None]
            record.write_json(paths.series)
    return record, paths


async def _stop_everything(actuator: LocalActuator, prometheus: PrometheusServer) -> None:
    try:
        await actuator.close()
    finally:
        await prometheus.stop()


async def _run_with_parts(
    options: DemoOptions,
    service: Any,
    actuator: LocalActuator,
    prometheus_url: str,
    record: DemoRecord,
    view: View,
    model_name: str,
) -> None:
    spec = service.spec
    initial_batch = options.initial_max_batch_size or spec.batching.min_batch_size
    view.message(
        f"starting {spec.replicas.min} model server replica(s) ({spec.model.bundled_model}, "
        f"MAX_BATCH_SIZE={initial_batch}) …"
    )
    await actuator.apply(
        replicas=max(1, spec.replicas.min), max_batch_size=initial_batch, reason="demo start"
    )
    await actuator.wait_converged(180.0)
    cold_starts = [r.startup_s for r in actuator.replicas if r.startup_s is not None]
    if cold_starts:
        view.message(
            f"cold start of a replica (spawn → ready: torch import, model build, start-up profile): "
            f"{cold_starts[0]:.1f} s; the manifest's scaling.startupSeconds is "
            f"{spec.scaling.startup_seconds} s"
        )
    controller = DemoController(service, prometheus_url, actuator)
    profile = await controller.wait_for_profile(timeout_s=60.0)
    calibration = calibrate(
        profile,
        max_batch_size=spec.batching.max_batch_size,
        factor=(QUICK_SHAPE if options.quick else FULL_SHAPE).factor,
        baseline_qps=options.baseline_qps,
    )
    view.message(calibration.line())
    traffic = choose_traffic(options, calibration)
    record.profile_name = traffic.profile.name
    record.phases = traffic.phases
    record.sizing.update(asdict(calibration))
    body = await fetch_request_body(actuator.endpoints()[0], model_name)
    arrivals = arrival_times(traffic.profile, options.seed)
    view.message(
        f"traffic: {traffic.profile.name}, {traffic.profile.duration_s:.0f} s, "
        f"{len(arrivals)} requests, peak {traffic.profile.peak_qps:.0f} qps"
    )
    view.message(SIZING_NOTE)

    loop = asyncio.get_running_loop()
    load_start = loop.time()
    latest: dict[str, float | None] = {"p99": None}

    def on_interval(stats: IntervalStats) -> None:
        if stats.end_s - stats.start_s < 0.5 and not stats.errors:
            return  # the last sliver after the schedule ends: rates over it mean nothing
        desired = actuator.desired or (0, 0)
        p99 = None if math.isnan(stats.p99_ms) else stats.p99_ms / 1000
        failed = sum(stats.errors.values())
        tick = Tick(
            t_s=round(stats.end_s, 3),
            offered_qps=traffic.profile.rate_at(stats.start_s),
            sent_qps=stats.offered_qps,
            achieved_qps=stats.achieved_qps,
            p99_s=p99,
            failed=failed,
            replicas=desired[0],
            ready_replicas=len(actuator.endpoints()),
            processes=len(actuator.live_pids()),
            max_batch_size=desired[1],
            controller_p99_s=latest["p99"],
        )
        record.ticks.append(tick)
        view.tick(tick)

    def on_step(outcome: StepOutcome) -> None:
        latest["p99"] = outcome.observed_p99_s
        row = DecisionRow(
            t_s=round(loop.time() - load_start, 3),
            replicas=outcome.replicas,
            max_batch_size=outcome.max_batch_size,
            reason=outcome.reason,
            changed=outcome.changed,
            observed_p99_s=outcome.observed_p99_s,
            observed_qps=outcome.observed_qps,
            limited_by=outcome.limited_by,
        )
        record.decisions.append(row)
        view.decision(row)
        for event in outcome.events:
            record.kubernetes_events.append({"t_s": row.t_s, **asdict(event)})
            view.message(f"  event {event.type} {event.reason}: {event.message}")

    interval_s = float(spec.scaling.interval_seconds or 2)
    control = asyncio.create_task(_control_forever(controller, interval_s, on_step, view))
    try:
        # Enough connections that no request waits client-side for one: a request queued in the
        # client for a replica that has meanwhile drained would fail to connect.
        summary = await run_load(
            actuator.endpoints,
            model_name,
            body,
            arrivals,
            on_interval=on_interval,
            max_connections=4096,
            timeout_s=30.0,
        )
    finally:
        control.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control
        controller.close()
    record.sent = summary.sent
    record.answered = summary.ok
    record.failed = sum(summary.errors.values())
    record.failures_by_kind = dict(summary.errors)


async def _control_forever(
    controller: DemoController, interval_s: float, on_step: Callable[[StepOutcome], None], view: View
) -> None:
    """One control step per interval, on the clock, as the operator's kopf timer does."""
    next_at = time.monotonic()
    while True:
        try:
            on_step(await controller.step())
        except Exception as error:  # the operator retries a failed step on the next tick too
            view.message(f"  control step failed: {type(error).__name__}: {error}")
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
