"""``python -m model_server.loadgen`` / ``slo-loadgen``: open-loop load from the command line.

Examples::

    slo-loadgen --url http://127.0.0.1:8080 --qps 200 --duration 30
    slo-loadgen --url http://a:8080 --url http://b:8080 --qps 50 --ramp-to 400 --duration 60
    slo-loadgen --url http://127.0.0.1:8080 --peak-qps 300 --duration 120 \\
        --trace ../shared/traces/azure_llm_2023_code/derived_code_per_second.csv
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from model_server.loadgen import traces
from model_server.loadgen.generator import IntervalStats, fetch_request_body, run_load


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slo-loadgen",
        description="Open-loop Poisson load (constant, ramp, step or a trace) on v2 inference servers.",
    )
    parser.add_argument(
        "--url", action="append", required=True, help="server base URL; repeat to spread load round robin"
    )
    parser.add_argument("--model", default="ranking", help="model name in /v2/models/{name}/infer")
    parser.add_argument("--duration", type=_positive, default=10.0, help="seconds of load (default 10)")
    shape = parser.add_argument_group("rate (one of)")
    shape.add_argument(
        "--qps", type=_non_negative, help="constant rate, or the start of --ramp-to / --step-to"
    )
    shape.add_argument("--ramp-to", type=_non_negative, help="rise linearly from --qps to this rate")
    shape.add_argument("--step-to", type=_non_negative, help="jump from --qps to this rate at --step-at")
    shape.add_argument("--step-at", type=_non_negative, default=None, help="seconds (default: half way)")
    shape.add_argument("--trace", help="replay a trace file's shape (see model_server.loadgen.traces)")
    shape.add_argument("--peak-qps", type=_positive, help="with --trace: rescale so its peak is this rate")
    shape.add_argument("--trace-start", type=_non_negative, default=0.0, help="with --trace: seconds to skip")
    shape.add_argument(
        "--speedup", type=_positive, default=1.0, help="with --trace: replay this many times faster"
    )
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals and the request body")
    parser.add_argument("--timeout", type=_positive, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--interval", type=_positive, default=1.0, help="seconds between progress lines")
    parser.add_argument("--quiet", action="store_true", help="no per-interval lines")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return parser


def profile_from_args(args: argparse.Namespace) -> traces.RateProfile:
    """The rate profile the arguments describe; raises ``ValueError`` with the reason."""
    if args.trace is not None:
        if args.qps is not None:
            raise ValueError("give --trace or --qps, not both")
        profile = traces.from_trace_file(args.trace, peak_qps=args.peak_qps).time_scaled(1.0 / args.speedup)
        return profile.window(args.trace_start, args.duration)
    if args.qps is None:
        raise ValueError("give a rate: --qps (optionally with --ramp-to or --step-to) or --trace")
    if args.ramp_to is not None and args.step_to is not None:
        raise ValueError("--ramp-to and --step-to exclude each other")
    if args.ramp_to is not None:
        return traces.ramp(args.qps, args.ramp_to, duration_s=args.duration)
    if args.step_to is not None:
        at = args.step_at if args.step_at is not None else args.duration / 2
        return traces.step(args.qps, args.step_to, at_s=at, duration_s=args.duration)
    return traces.constant(args.qps, args.duration)


async def _run(args: argparse.Namespace, profile: traces.RateProfile) -> int:
    body = await fetch_request_body(args.url[0], args.model, rows=args.rows, seed=args.seed)
    arrivals = traces.arrival_times(profile, seed=args.seed)
    arrivals = arrivals[arrivals < args.duration]

    def show(stats: IntervalStats) -> None:
        print(stats.line(), flush=True)

    summary = await run_load(
        list(args.url),
        args.model,
        body,
        arrivals,
        timeout_s=args.timeout,
        interval_s=args.interval,
        on_interval=None if args.quiet else show,
    )
    print(summary.to_json() if args.json else summary.line())
    return 0 if summary.ok else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        profile = profile_from_args(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    try:
        import uvloop

        raise SystemExit(uvloop.run(_run(args, profile)))
    except ImportError:
        raise SystemExit(asyncio.run(_run(args, profile))) from None


if __name__ == "__main__":
    main()
