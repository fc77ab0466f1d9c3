"""The data plane: request validation, the adaptive dynamic batcher, readiness and drain. No HTTP here.

Batching rule (one model execution at a time, the model in a worker thread):

* a batch is dispatched as soon as ``max_batch_size`` rows wait (size trigger);
* when the model is idle and requests wait, they are dispatched at once unless the recent arrival
  rate says the batch will fill sooner than one execution takes (waiting then costs less than running
  a half-empty batch) — then the batcher holds, at most until the oldest request has waited
  ``max_batch_delay`` (delay trigger). At low load a request therefore never waits for company it
  will not get, and its latency stays the model's batch-of-one time;
* while the model is busy, requests accumulate and the next batch takes all of them (up to the
  maximum): the batch size adapts to the load by itself.

A full queue sheds the request at once (:class:`~model_server.errors.Overloaded`) rather than letting
latency grow without bound; a failing batch fails only its own requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_server.errors import Draining, InvalidInput, ModelFailure, ModelNotFound, Overloaded
from model_server.metrics import ServerMetrics
from model_server.model import Array, ServedModel, TensorSpec

BatchFunction = Callable[[Mapping[str, Array]], Mapping[str, Array]]
"""Runs one stacked batch: arrays with a leading row dimension in, arrays with as many rows out."""


@dataclass(eq=False)
class _Pending:
    inputs: Mapping[str, Array]
    rows: int
    arrival: float
    future: asyncio.Future[dict[str, Array]] = field(repr=False)


@dataclass(frozen=True)
class BatchRecord:
    """What one dispatched batch looked like; kept (bounded) for tests and diagnostics."""

    rows: int
    requests: int
    dispatched_at: float
    oldest_arrival: float
    seconds: float
    failed: bool


class Batcher:
    """Queue plus dispatcher plus one worker thread; see the module docstring for the rule."""

    def __init__(
        self,
        run_batch: BatchFunction,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue_size: int,
        metrics: ServerMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        history: int = 1000,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_batch_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, max_batch_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self.clock = clock
        self.batches: collections.deque[BatchRecord] = collections.deque(maxlen=history)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=max(2, max_batch_size)
        )
        self._batch_seconds: float | None = None  # moving average of one execution
        self._executing = False
        self._draining = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def draining(self) -> bool:
        return self._draining

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch_forever(), name="batcher")

    async def close(self) -> None:
        """Stop the dispatcher; call :meth:`drain` first to answer what is queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(Draining("server stopped before this request ran"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def infer(self, inputs: Mapping[str, Array], rows: int) -> dict[str, Array]:
        """Queue one request of ``rows`` rows and wait for its own slice of the batch's outputs."""
        if self._draining:
            raise Draining("server is shutting down; send the request to another replica")
        if len(self._queue) >= self.max_queue_size:
            raise Overloaded(f"queue full ({self.max_queue_size} requests waiting); retry later")
        if rows > self.max_batch_size:
            raise InvalidInput(f"request has {rows} rows, more than MAX_BATCH_SIZE={self.max_batch_size}")
        now = self.clock()
        pending = _Pending(inputs, rows, now, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_rows += rows
        self._arrivals.append((now, rows))
        self._idle.clear()
        self._set_depth()
        self._wakeup.set()
        return await pending.future

    async def drain(self) -> None:
        """Refuse new requests and return once every queued and running request has its answer."""
        self._draining = True
        self._wakeup.set()
        await self._idle.wait()

    # --- dispatcher ---------------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            hold_s = self._hold_seconds()
            if hold_s > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), hold_s)
                continue
            await self._execute(self._take_batch())

    def _hold_seconds(self) -> float:
        """How long to wait for more rows before dispatching; 0 means dispatch now."""
        if self._draining or self.max_batch_delay_s <= 0 or self._queued_rows >= self.max_batch_size:
            return 0.0
        now = self.clock()
        remaining = self._queue[0].arrival + self.max_batch_delay_s - now
        if remaining <= 0 or len(self._arrivals) < 2:
            return 0.0
        first, last = self._arrivals[0][0], self._arrivals[-1][0]
        rows_after_first = sum(rows for _, rows in self._arrivals) - self._arrivals[0][1]
        span = last - first
        rate = rows_after_first / span if span > 0 else math.inf
        if now - last > remaining:  # the stream has paused; no reason to expect company soon
            return 0.0
        fill_s = (self.max_batch_size - self._queued_rows) / rate if rate > 0 else math.inf
        execution_s = self.max_batch_delay_s if self._batch_seconds is None else self._batch_seconds
        return remaining if fill_s <= min(remaining, execution_s) else 0.0

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            pending = self._queue.popleft()
            self._queued_rows -= pending.rows
            if pending.future.done():  # the client went away while it waited
                continue
            batch.append(pending)
            rows += pending.rows
        self._set_depth()
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        dispatched_at = self.clock()
        if self.metrics is not None:
            for pending in batch:
                self.metrics.queue_duration.observe(dispatched_at - pending.arrival)
        self._executing = True
        loop = asyncio.get_running_loop()
        failed = False
        seconds = 0.0
        try:
            results, seconds = await loop.run_in_executor(
                self._executor,
                _run_stacked,
                self.run_batch,
                [p.inputs for p in batch],
                [p.rows for p in batch],
            )
        except Exception as error:
            failed = True
            failure = ModelFailure(f"model failed on a batch of {len(batch)} requests: {error!r}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(failure)
        else:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            self._executing = False
        rows = sum(p.rows for p in batch)
        if not failed:
            previous = self._batch_seconds
            self._batch_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self.batches.append(BatchRecord(rows, len(batch), dispatched_at, batch[0].arrival, seconds, failed))
        if self.metrics is not None:
            self.metrics.batch_size.observe(rows)
            if not failed:
                self.metrics.batch_duration.observe(seconds)

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._queue))


def _run_stacked(
    run_batch: BatchFunction, inputs: Sequence[Mapping[str, Array]], rows: Sequence[int]
) -> tuple[list[dict[str, Array]], float]:
    """Worker-thread side: stack the requests, run once, split the outputs back in order."""
    if len(inputs) == 1:
        stacked: Mapping[str, Array] = inputs[0]
    else:
        stacked = {name: np.concatenate([item[name] for item in inputs]) for name in inputs[0]}
    started = time.perf_counter()
    outputs = run_batch(stacked)
    seconds = time.perf_counter() - started
    total = sum(rows)
    for name, array in outputs.items():
        if array.shape[:1] != (total,):
            raise RuntimeError(f"output {name!r} has shape {list(array.shape)}, expected {total} rows")
    boundaries = np.cumsum(rows)[:-1]
    split = {name: np.split(array, boundaries) for name, array in outputs.items()}
    return [{name: parts[i] for name, parts in split.items()} for i in range(len(rows))], seconds


# --- Open Inference Protocol payloads --------------------------------------------------------------


def decode_inputs(
    specs: Sequence[TensorSpec], body: object, binary: bytes = b""
) -> tuple[dict[str, Array], int]:
    """Check a v2 inference request against the model's inputs; arrays by name and the row count.

    ``binary`` holds the tensors of the binary-data extension (Triton's HTTP client sends those),
    which a tensor points to with ``parameters.binary_data_size``.
    """
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    items = body.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput("request needs a non-empty 'inputs' list")
    by_name = {spec.name: spec for spec in specs}
    arrays: dict[str, Array] = {}
    rows: int | None = None
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput("each entry of 'inputs' must be an object with name, shape, datatype, data")
        name = item.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInput(f"unknown input {name!r}; this model takes {sorted(by_name)}")
        if name in arrays:
            raise InvalidInput(f"input {name!r} appears twice")
        array, offset = _decode_tensor(spec, item, binary, offset)
        if rows is not None and array.shape[0] != rows:
            raise InvalidInput(f"input {name!r} has {array.shape[0]} rows, other inputs have {rows}")
        rows = array.shape[0]
        arrays[spec.name] = array
    missing = sorted(set(by_name) - set(arrays))
    if missing:
        raise InvalidInput(f"missing inputs {missing}")
    if offset != len(binary):
        raise InvalidInput(f"binary data has {len(binary) - offset} bytes no input claims")
    assert rows is not None
    return arrays, rows


def _decode_tensor(spec: TensorSpec, item: dict[str, Any], binary: bytes, offset: int) -> tuple[Array, int]:
    name = spec.name
    datatype = item.get("datatype")
    if datatype != spec.datatype:
        raise InvalidInput(f"input {name!r} has datatype {datatype!r}, the model expects {spec.datatype}")
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    ):
        raise InvalidInput(f"input {name!r} needs 'shape' as a list of integers, got {shape!r}")
    if tuple(shape[1:]) != spec.shape or shape[0] < 1:
        raise InvalidInput(
            f"input {name!r} has shape {shape}, the model expects "
            f"[rows >= 1, {', '.join(map(str, spec.shape))}]"
        )
    count = shape[0] * spec.elements_per_row
    dtype = spec.numpy_dtype
    parameters = item.get("parameters") or {}
    binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size {binary_size!r} != "
                f"{count} elements x {dtype.itemsize} bytes"
            )
        if offset + binary_size > len(binary):
            raise InvalidInput(f"input {name!r}: binary data is shorter than its binary_data_size")
        flat = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape).copy(), offset + binary_size  # own, writable memory for torch
    if "data" not in item:
        raise InvalidInput(f"input {name!r} has no 'data'")
    try:
        raw = np.array(item["data"])
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"input {name!r}: data is not a regular array of numbers ({error})") from None
    if raw.dtype.kind not in "biuf" or (dtype.kind in "iu" and raw.dtype.kind == "f"):
        raise InvalidInput(f"input {name!r}: data holds {raw.dtype.kind!r}-kind values, not {spec.datatype}")
    if raw.size != count:
        raise InvalidInput(f"input {name!r}: data has {raw.size} elements, shape {shape} needs {count}")
    try:
        return raw.astype(dtype, casting="unsafe").reshape(shape), offset
    except (ValueError, OverflowError) as error:
        raise InvalidInput(f"input {name!r}: {error}") from None


def encode_outputs(
    specs: Sequence[TensorSpec], arrays: Mapping[str, Array], requested: Sequence[str] | None
) -> list[dict[str, object]]:
    names = [spec.name for spec in specs] if not requested else list(requested)
    by_name = {spec.name: spec for spec in specs}
    return [
        {
            "name": name,
            "datatype": by_name[name].datatype,
            "shape": list(arrays[name].shape),
            "data": arrays[name].ravel().tolist(),
        }
        for name in names
    ]


def requested_outputs(specs: Sequence[TensorSpec], body: dict[str, Any]) -> list[str] | None:
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    known = {spec.name for spec in specs}
    names = [o.get("name") for o in outputs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; this model returns {sorted(known)}")
    return [str(n) for n in names]


# --- The data plane ------------------------------------------------------------------------------


class DataPlane:
    """One served model behind a batcher, its readiness, and the protocol's metadata and infer calls."""

    def __init__(
        self,
        model: ServedModel,
        model_name: str,
        max_batch_size: int,
        max_batch_delay_ms: float,
        max_queue_size: int,
        metrics: ServerMetrics,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.metrics = metrics
        self.batcher = Batcher(
            model.predict, max_batch_size, max_batch_delay_ms / 1000.0, max_queue_size, metrics
        )
        self._started = False

    @property
    def ready(self) -> bool:
        return self._started and not self.batcher.draining

    def start(self) -> None:
        self.batcher.start()
        self._started = True

    async def drain(self) -> None:
        await self.batcher.drain()

    async def close(self) -> None:
        await self.batcher.close()

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {self.model_name!r}")

    def server_metadata(self) -> dict[str, object]:
        return {
            "name": "slo-autoscaler-model-server",
            "version": "0.1.0",
            "extensions": ["binary_tensor_data"],
        }

    def model_metadata(self, name: str) -> dict[str, object]:
        self.check_model(name)
        return {
            "name": self.model_name,
            "versions": ["1"],
            "platform": self.model.platform,
            "inputs": [spec.metadata() for spec in self.model.inputs],
            "outputs": [spec.metadata() for spec in self.model.outputs],
        }

    async def infer(self, name: str, body: object, binary: bytes = b"") -> dict[str, object]:
        self.check_model(name)
        arrays, rows = decode_inputs(self.model.inputs, body, binary)
        assert isinstance(body, dict)
        requested = requested_outputs(self.model.outputs, body)
        outputs = await self.batcher.infer(arrays, rows)
        response: dict[str, object] = {
            "model_name": self.model_name,
            "model_version": "1",
            "outputs": encode_outputs(self.model.outputs, outputs, requested),
        }
        if isinstance(body.get("id"), str):
            response["id"] = body["id"]
        return response
