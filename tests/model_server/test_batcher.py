"""Batcher semantics, driven by plain batch functions (the batcher's own interface, not a model fake)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest

from model_server.dataplane import Batcher
from model_server.errors import Draining, ModelFailure, Overloaded
from model_server.model import Array


def doubling(delay_s: float = 0.0, calls: list[int] | None = None) -> object:
    def run(batch: Mapping[str, Array]) -> dict[str, Array]:
        if calls is not None:
            calls.append(len(batch["x"]))
        if delay_s:
            time.sleep(delay_s)
        return {"y": batch["x"] * 2}

    return run


def row(value: float, rows: int = 1) -> dict[str, Array]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


async def test_outputs_are_split_back_to_their_callers_in_order() -> None:
    batcher = Batcher(doubling(0.02), max_batch_size=16, max_batch_delay_s=0.0, max_queue_size=100)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.infer(row(i, rows=1 + i % 3), 1 + i % 3) for i in range(12)))
    finally:
        await batcher.close()
    for i, result in enumerate(results):
        assert result["y"].shape == (1 + i % 3, 2)
        assert np.all(result["y"] == 2 * i)
    assert max(b.rows for b in batcher.batches) > 1, "requests that waited together were batched"


async def test_size_trigger_dispatches_a_full_batch_without_waiting_for_the_delay() -> None:
    calls: list[int] = []
    batcher = Batcher(doubling(calls=calls), max_batch_size=4, max_batch_delay_s=5.0, max_queue_size=100)
    batcher.start()
    try:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(batcher.infer(row(i), 1) for i in range(4))), 2.0)
        assert time.perf_counter() - started < 1.0
    finally:
        await batcher.close()
    assert calls == [4]


async def test_delay_trigger_holds_a_partial_batch_at_most_the_delay() -> None:
    """A burst predicts company, so the batcher holds; the last row never comes; the delay ends the wait."""
    calls: list[int] = []
    delay_s = 0.15
    batcher = Batcher(doubling(calls=calls), max_batch_size=8, max_batch_delay_s=delay_s, max_queue_size=100)
    batcher.start()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(batcher.infer(row(i), 1) for i in range(7)))
        waited = time.perf_counter() - started
    finally:
        await batcher.close()
    assert calls == [7]
    assert delay_s * 0.9 <= waited < delay_s + 1.0
    record = batcher.batches[0]
    assert record.dispatched_at - record.oldest_arrival == pytest.approx(delay_s, abs=0.05)


async def test_idle_model_does_not_sit_on_a_lone_request() -> None:
    """Low load: requests far apart are dispatched at once, not after MAX_BATCH_DELAY."""
    batcher = Batcher(doubling(), max_batch_size=8, max_batch_delay_s=0.5, max_queue_size=100)
    batcher.start()
    try:
        waits = []
        for i in range(5):
            started = time.perf_counter()
            await batcher.infer(row(i), 1)
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.03)
    finally:
        await batcher.close()
    assert max(waits) < 0.1, waits
    assert [b.rows for b in batcher.batches] == [1] * 5


async def test_requests_arriving_while_the_model_runs_form_the_next_batch() -> None:
    calls: list[int] = []
    batcher = Batcher(doubling(0.1, calls), max_batch_size=32, max_batch_delay_s=0.0, max_queue_size=100)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.infer(row(0), 1))
        await asyncio.sleep(0.03)  # the first batch is running now
        rest = [asyncio.ensure_future(batcher.infer(row(i), 1)) for i in range(1, 11)]
        await asyncio.gather(first, *rest)
    finally:
        await batcher.close()
    assert calls == [1, 10]


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    def fails_on_negative(batch: Mapping[str, Array]) -> dict[str, Array]:
        time.sleep(0.05)
        if (batch["x"] < 0).any():
            raise RuntimeError("negative input")
        return {"y": batch["x"] * 2}

    batcher = Batcher(fails_on_negative, max_batch_size=4, max_batch_delay_s=0.0, max_queue_size=100)
    batcher.start()
    try:
        before = asyncio.ensure_future(batcher.infer(row(1), 1))
        await asyncio.sleep(0.02)
        doomed = [asyncio.ensure_future(batcher.infer(row(v), 1)) for v in (2, -1, 3)]
        await before
        after_results = await asyncio.gather(*doomed, return_exceptions=True)
        after = await batcher.infer(row(5), 1)
    finally:
        await batcher.close()
    assert all(isinstance(r, ModelFailure) for r in after_results)
    assert "negative input" in str(after_results[0])
    assert np.all(after["y"] == 10), "the batcher keeps serving after a failure"
    assert [b.failed for b in batcher.batches] == [False, True, False]


async def test_a_full_queue_sheds_load_at_once() -> None:
    release = threading.Event()

    def blocked(batch: Mapping[str, Array]) -> dict[str, Array]:
        release.wait(5)
        return {"y": batch["x"]}

    batcher = Batcher(blocked, max_batch_size=1, max_batch_delay_s=0.0, max_queue_size=2)
    batcher.start()
    try:
        running = asyncio.ensure_future(batcher.infer(row(0), 1))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.infer(row(i), 1)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.infer(row(3), 1)
        release.set()
        await asyncio.gather(running, *queued)
    finally:
        release.set()
        await batcher.close()


async def test_drain_answers_everything_queued_and_refuses_new_requests() -> None:
    batcher = Batcher(doubling(0.03), max_batch_size=2, max_batch_delay_s=0.0, max_queue_size=100)
    batcher.start()
    try:
        queued = [asyncio.ensure_future(batcher.infer(row(i), 1)) for i in range(7)]
        await asyncio.sleep(0)
        await batcher.drain()
        assert all(f.done() and not f.exception() for f in queued)
        with pytest.raises(Draining):
            await batcher.infer(row(9), 1)
    finally:
        await batcher.close()
