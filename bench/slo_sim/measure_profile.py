"""Measure the bundled model's batch-duration profile and write it where the simulator reads it.

The simulator's service times must be measured, not invented: this times the same bundled model the
server serves, with the server's own start-up profiler, and records when, where and how.

    python -m slo_sim.measure_profile --output bench/slo_sim/profiles/ranking-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="ranking", help="bundled model name (default: ranking)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per batch size (median kept)")
    parser.add_argument("--rounds", type=int, default=5, help="profiling rounds (fastest median kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch  # late: only this script needs torch, the simulator reads the JSON

    from model_server.model import bundled_model, resolve_device
    from model_server.profile import profile_model

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = bundled_model(args.model, device)
    started = time.perf_counter()
    # This machine is shared: interference only ever adds time, so keep each size's fastest round median.
    rounds = [
        profile_model(model, args.max_batch_size, runs=args.runs, budget_s=120.0) for _ in range(args.rounds)
    ]
    durations = {size: min(r[size] for r in rounds if size in r) for size in rounds[0]}
    record = {
        "model": args.model,
        "device": str(device),
        "torch_num_threads": args.threads,
        "torch_version": torch.__version__,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": (
            f"model_server.profile.profile_model, median of {args.runs} runs after one warm-up; "
            f"fastest of {args.rounds} rounds per batch size"
        ),
        "profiling_seconds": round(time.perf_counter() - started, 1),
        "batch_duration_s": {str(size): seconds for size, seconds in durations.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["batch_duration_s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
