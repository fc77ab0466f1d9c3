"""Start-up profile: one model execution timed at batch sizes 1, 2, 4, … so a planner can size batches.

Exported as ``model_profile_batch_duration_seconds{batch_size}``; the operator reads it instead of
probing the live service. A median of a few runs after a warm-up keeps it honest and short.
"""

from __future__ import annotations

import statistics
import time

from model_server.model import ServedModel


def profile_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below ``max_batch_size``, then ``max_batch_size`` itself."""
    sizes: list[int] = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return sizes


def profile_model(
    model: ServedModel, max_batch_size: int, runs: int = 3, budget_s: float = 10.0
) -> dict[int, float]:
    """Median seconds of one execution per batch size; stops early once ``budget_s`` is spent."""
    started = time.perf_counter()
    seconds: dict[int, float] = {}
    for batch_size in profile_batch_sizes(max_batch_size):
        batch = model.example_batch(batch_size)
        model.predict(batch)  # warm-up: first calls allocate and pick kernels
        timings = []
        for _ in range(runs):
            begin = time.perf_counter()
            model.predict(batch)
            timings.append(time.perf_counter() - begin)
        seconds[batch_size] = statistics.median(timings)
        if time.perf_counter() - started > budget_s:
            break
    return seconds
