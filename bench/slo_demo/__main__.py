"""``python -m slo_demo [--quick] [--manifest FILE] [--profile builtin|TRACE] [--out DIR]`` (``make demo``).

Exit codes: 0 after a complete run, 1 on a setup error (one line says what), 130 when
interrupted (Ctrl-C or SIGTERM) — in every case after every process it started has stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from slo_demo.loop import DemoOptions, demo_paths, run_demo
from slo_demo.manifest import DEFAULT_MANIFEST, ManifestError, load_manifest
from slo_demo.plot import plot_record
from slo_demo.prometheus_server import PrometheusError
from slo_demo.record import summarise
from slo_demo.report import summary_lines, write_report
from slo_demo.view import make_view
from slo_operator.local_actuator import ReplicaStartError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m slo_demo",
        description=(
            "The whole SLO loop on this machine: Prometheus, model servers, the operator's controller, load."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run instead of ~3 minutes")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="InferenceService YAML")
    parser.add_argument(
        "--profile",
        default="builtin",
        help="'builtin' (baseline, step up x3, hold, step down) or a trace file in the simulator's formats",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="where the plot, report and series go"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the Poisson arrivals")
    parser.add_argument(
        "--baseline-qps",
        type=float,
        default=None,
        help="baseline rate (the step is x3); default: sized from the first replica's start-up profile",
    )
    parser.add_argument("--plain", action="store_true", help="plain log lines even on a terminal")
    return parser


async def _main(options: DemoOptions, plain: bool) -> int:
    service = load_manifest(options.manifest)
    title = (
        f"slo-autoscaler demo — {service.metadata.name} (P99 target {service.spec.slo.p99_latency_ms:g} ms)"
    )
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping: list[int] = []

    def stop(signum: int) -> None:
        """The first signal cancels the run (which then stops every process); later ones wait for that."""
        if not stopping:
            stopping.append(signum)
            task.cancel()

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then installs no handler.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop, signum)
    with make_view(service.spec.slo.p99_latency_ms / 1000, title, force_plain=plain) as view:
        record, paths = await run_demo(options, view)
    summary = summarise(record)
    plot_record(record, paths.plot)
    write_report(record, summary, paths.report, paths.plot)
    for line in summary_lines(record, summary):
        print(line)
    print(f"plot:   {paths.plot}")
    print(f"report: {paths.report}")
    print(f"series: {paths.series}")
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if arguments.profile != "builtin" and not Path(arguments.profile).is_file():
        print(f"slo_demo: --profile {arguments.profile}: no such trace file", file=sys.stderr)
        return 1
    options = DemoOptions(
        manifest=arguments.manifest,
        out_dir=arguments.out,
        quick=arguments.quick,
        profile=arguments.profile,
        seed=arguments.seed,
        baseline_qps=arguments.baseline_qps,
    )
    try:
        return asyncio.run(_main(options, arguments.plain))
    except (KeyboardInterrupt, asyncio.CancelledError):
        paths = demo_paths(options.out_dir)
        print(f"slo_demo: interrupted; every process it started has stopped (partial series: {paths.series})")
        return 130
    except (ManifestError, PrometheusError, ReplicaStartError, TimeoutError) as error:
        print(f"slo_demo: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
