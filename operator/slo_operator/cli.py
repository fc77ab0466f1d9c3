"""Command line: ``run`` (the operator), ``validate FILE…`` (offline CRD checks), ``plan`` (sizing).

``validate`` and ``plan`` need no cluster and no Prometheus: they are for pre-commit hooks, GitOps
pipelines and for answering "how many GPUs for this SLO?" before deploying.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from slo_operator import policy
from slo_operator.settings import OperatorConfig, SettingsError, add_flags

EXAMPLE_PROFILE: Mapping[int, float] = {
    1: 0.004,
    2: 0.0045,
    4: 0.0055,
    8: 0.0075,
    16: 0.0115,
    32: 0.0195,
    64: 0.0355,
}
"""Illustrative batch durations (s) of a small GPU model, used when ``plan`` gets no ``--profile``."""


def _run(args: argparse.Namespace) -> int:
    try:
        config = OperatorConfig.from_values(os.environ, vars(args))
    except SettingsError as error:
        print(f"slo-operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import kopf

    from slo_operator import handlers  # noqa: F401  - registers the handlers

    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    kopf.run(
        clusterwide=not config.watch_namespaces,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config),
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from slo_operator.validation import validate_files

    problems = validate_files(Path(p) for p in args.files)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(args.files)} file(s) valid")
    return 1 if problems else 0


def load_profile(path: Path) -> policy.Profile:
    """A YAML/JSON mapping ``batch_size: seconds``, e.g. read off ``model_profile_batch_duration_seconds``."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, Mapping) and "batch_duration_s" in data:
        data = data["batch_duration_s"]
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path}: expected a mapping of batch size to seconds, e.g. {{1: 0.004, 8: 0.0075}}")
    try:
        profile = {int(size): float(seconds) for size, seconds in data.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: batch sizes must be integers and durations numbers (seconds)") from None
    if any(size < 1 or seconds <= 0 for size, seconds in profile.items()):
        raise ValueError(f"{path}: batch sizes must be >= 1 and durations > 0")
    return policy.Profile(profile)


def plan(
    *,
    p99_ms: float,
    qps: float,
    profile: policy.Profile,
    max_replicas: int,
    max_batch_size: int,
    max_batch_delay_ms: float,
    headroom: float,
) -> policy.Decision:
    """What the policy would choose for a steady ``qps`` at a fresh start."""
    targets = policy.Targets(
        p99_target_s=p99_ms / 1000.0,
        target_qps=qps,
        max_replicas=max_replicas,
        max_batch_size=max_batch_size,
        max_batch_delay_s=max_batch_delay_ms / 1000.0,
        headroom=headroom,
    )
    snapshot = policy.MetricsSnapshot(
        time_s=0.0,
        window_s=60.0,
        qps=qps,
        p99_s=None,
        request_count=None,
        ready_replicas=1,
        current_replicas=1,
        current_max_batch_size=1,
        profile=profile,
    )
    return policy.decide(targets, snapshot, policy.History())


def _plan(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(Path(args.profile)) if args.profile else policy.Profile(dict(EXAMPLE_PROFILE))
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"slo-operator plan: {error}", file=sys.stderr)
        return 2
    if args.p99_ms <= 0 or args.qps < 0:
        print("slo-operator plan: --p99-ms must be > 0 and --qps >= 0", file=sys.stderr)
        return 2
    decision = plan(
        p99_ms=args.p99_ms,
        qps=args.qps,
        profile=profile,
        max_replicas=args.max_replicas,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        headroom=args.headroom,
    )
    result = {
        "replicas": decision.replicas,
        "maxBatchSize": decision.max_batch_size,
        "predictedP99Ms": None
        if decision.predicted_p99_s is None
        else round(decision.predicted_p99_s * 1000, 3),
        "capacityQps": None if decision.capacity_qps is None else round(decision.capacity_qps, 1),
        "targetQpsReachable": decision.target_qps_reachable,
        "reason": decision.reason,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
        if not args.profile:
            print("(illustrative profile; pass --profile with your model's measured batch durations)")
    return 0 if decision.target_qps_reachable else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slo-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator (kopf)")
    add_flags(run)
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check InferenceService manifests offline")
    validate.add_argument("files", nargs="+", help="YAML files (multi-document allowed)")
    validate.set_defaults(handler=_validate)

    planner = commands.add_parser("plan", help="replicas and batch size the policy would choose")
    planner.add_argument("--p99-ms", type=float, required=True, help="P99 latency target in ms")
    planner.add_argument("--qps", type=float, required=True, help="steady load in requests per second")
    planner.add_argument("--profile", help="YAML/JSON mapping batch size -> batch duration in seconds")
    planner.add_argument("--max-replicas", type=int, default=1000)
    planner.add_argument("--max-batch-size", type=int, default=64)
    planner.add_argument("--max-batch-delay-ms", type=float, default=5.0)
    planner.add_argument("--headroom", type=float, default=0.2)
    planner.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    planner.set_defaults(handler=_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    del args.handler, args.command
    return int(handler(args))
