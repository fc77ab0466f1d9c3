"""Open-loop HTTP load generator for the Open Inference Protocol (no torch; usable as a library).

Open loop: requests go out at pre-drawn arrival times whatever the server does, and each latency is
measured from the request's *scheduled* send time, so a slow server cannot hide its queueing by
slowing the generator down (no coordinated omission). Latencies go into HDR histograms.

Library API (everything is importable from ``model_server.loadgen``)::

    from model_server.loadgen import run_load, fetch_request_body, traces

    arrivals = traces.arrival_times(traces.constant(200, duration_s=10), seed=1)  # or any profile
    body = await fetch_request_body("http://127.0.0.1:8080", "ranking")   # random valid request
    summary = await run_load(
        targets,              # base URLs: a list (read again at every send, so it may be changed
                              # while the run goes on) or a callable returning the current list
        "ranking",            # model name in /v2/models/{name}/infer
        body,                 # bytes sent with every request
        arrivals,             # seconds from the start, sorted
        on_interval=print,    # optional: gets an IntervalStats every interval_s (default 1 s)
        stop=None,            # optional asyncio.Event: set it to stop sending early
    )
    summary.achieved_qps, summary.p99_ms, summary.errors   # LoadSummary

Requests are spread over the targets client-side, round robin. A request counts as failed on a
connection error, a timeout or any status other than 200; ``errors`` counts them by kind
(``http_503``, ``timeout``, ``connect``, ``disconnected``, ``client_error``, ``no_target``). Latency
percentiles are over successful requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

Targets = Sequence[str] | Callable[[], Sequence[str]]
"""Base URLs (``http://host:port``), or a callable giving the current ones at each send."""

_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 120_000_000, 3

_INT_DATATYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


@dataclass(frozen=True)
class IntervalStats:
    """One reporting interval, by completion time (``start_s``/``end_s`` from the run's start)."""

    start_s: float
    end_s: float
    offered_qps: float
    achieved_qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: dict[str, int]
    in_flight: int
    targets: int

    def line(self) -> str:
        errors = sum(self.errors.values())
        return (
            f"[{self.start_s:6.1f}s] offered={self.offered_qps:7.1f} achieved={self.achieved_qps:7.1f} qps "
            f"p50={self.p50_ms:7.2f} p99={self.p99_ms:7.2f} ms errors={errors} in_flight={self.in_flight} "
            f"targets={self.targets}"
        )


@dataclass(frozen=True)
class LoadSummary:
    """The whole run. ``achieved_qps`` = successes ÷ max(schedule length, time to the last answer)."""

    duration_s: float
    elapsed_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    offered_qps: float
    achieved_qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    status_counts: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"sent={self.sent} ok={self.ok} offered={self.offered_qps:.1f} "
            f"achieved={self.achieved_qps:.1f} qps "
            f"p50={self.p50_ms:.2f} p90={self.p90_ms:.2f} p99={self.p99_ms:.2f} p99.9={self.p999_ms:.2f} "
            f"max={self.max_ms:.2f} ms errors: {errors}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def _ms(histogram: HdrHistogram, percentile: float) -> float:
    if histogram.get_total_count() == 0:
        return float("nan")
    return float(histogram.get_value_at_percentile(percentile)) / 1000.0


class _Recorder:
    def __init__(self) -> None:
        self.total = _histogram()
        self.interval = _histogram()
        self.ok = 0
        self.interval_ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.interval_errors: collections.Counter[str] = collections.Counter()
        self.status_counts: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.interval_sent = 0
        self.in_flight = 0

    def success(self, latency_s: float) -> None:
        micros = min(max(int(latency_s * 1e6), _LOWEST_US), _HIGHEST_US)
        self.total.record_value(micros)
        self.interval.record_value(micros)
        self.ok += 1
        self.interval_ok += 1

    def failure(self, kind: str) -> None:
        self.errors[kind] += 1
        self.interval_errors[kind] += 1

    def take_interval(self, start_s: float, end_s: float, targets: int) -> IntervalStats:
        span = max(end_s - start_s, 1e-9)
        stats = IntervalStats(
            start_s=start_s,
            end_s=end_s,
            offered_qps=self.interval_sent / span,
            achieved_qps=self.interval_ok / span,
            p50_ms=_ms(self.interval, 50),
            p99_ms=_ms(self.interval, 99),
            ok=self.interval_ok,
            errors=dict(self.interval_errors),
            in_flight=self.in_flight,
            targets=targets,
        )
        self.interval = _histogram()
        self.interval_ok = self.interval_sent = 0
        self.interval_errors = collections.Counter()
        return stats


def _current(targets: Targets) -> Sequence[str]:
    return targets() if callable(targets) else targets


async def run_load(
    targets: Targets,
    model: str,
    body: bytes,
    arrivals: npt.NDArray[np.float64] | Sequence[float],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 1.0,
    on_interval: Callable[[IntervalStats], None] | None = None,
    stop: asyncio.Event | None = None,
    max_connections: int = 512,
    headers: dict[str, str] | None = None,
) -> LoadSummary:
    """Send one request per arrival time (seconds from now); see the module docstring."""
    schedule = np.asarray(arrivals, dtype=np.float64)
    if schedule.ndim != 1 or (schedule.size and (np.any(np.diff(schedule) < 0) or schedule[0] < 0)):
        raise ValueError("arrivals must be a sorted 1-D sequence of seconds >= 0")
    path = f"/v2/models/{model}/infer"
    send_headers = {"Content-Type": "application/json", **(headers or {})}
    recorder = _Recorder()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(url: str, scheduled: float) -> None:
            recorder.in_flight += 1
            try:
                async with session.post(url, data=body, headers=send_headers) as response:
                    await response.read()
                    status = response.status
                recorder.status_counts[str(status)] += 1
                if status == 200:
                    recorder.success(loop.time() - scheduled)
                else:
                    recorder.failure(f"http_{status}")
            except TimeoutError:
                recorder.failure("timeout")
            except aiohttp.ClientConnectorError:
                recorder.failure("connect")
            except aiohttp.ServerDisconnectedError:
                recorder.failure("disconnected")
            except aiohttp.ClientError:
                recorder.failure("client_error")
            finally:
                recorder.in_flight -= 1

        start = loop.time()
        reporter = (
            loop.create_task(_report(recorder, start, interval_s, on_interval, targets))
            if on_interval is not None
            else None
        )
        index = 0
        for offset in schedule.tolist():
            if stop is not None and stop.is_set():
                break
            scheduled = start + offset
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif index % 64 == 0:
                await asyncio.sleep(0)  # behind schedule: still let responses be read
            recorder.sent += 1
            recorder.interval_sent += 1
            urls = _current(targets)
            if not urls:
                recorder.failure("no_target")
                continue
            url = urls[index % len(urls)].rstrip("/") + path
            index += 1
            task = loop.create_task(send(url, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        elapsed = loop.time() - start
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            assert on_interval is not None
            last_start = interval_s * int(elapsed // interval_s)
            if recorder.interval_ok or recorder.interval_errors or recorder.interval_sent:
                on_interval(recorder.take_interval(last_start, elapsed, len(_current(targets))))
    duration = float(schedule[-1]) if schedule.size else 0.0
    window = max(duration, elapsed, 1e-9)
    total = recorder.total
    return LoadSummary(
        duration_s=duration,
        elapsed_s=elapsed,
        sent=recorder.sent,
        ok=recorder.ok,
        errors=dict(recorder.errors),
        offered_qps=recorder.sent / max(duration, 1e-9),
        achieved_qps=recorder.ok / window,
        p50_ms=_ms(total, 50),
        p90_ms=_ms(total, 90),
        p99_ms=_ms(total, 99),
        p999_ms=_ms(total, 99.9),
        max_ms=float(total.get_max_value()) / 1000.0 if recorder.ok else float("nan"),
        status_counts=dict(recorder.status_counts),
    )


async def _report(
    recorder: _Recorder,
    start: float,
    interval_s: float,
    on_interval: Callable[[IntervalStats], None],
    targets: Targets,
) -> None:
    loop = asyncio.get_running_loop()
    tick = 0
    while True:
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * interval_s - loop.time()))
        on_interval(
            recorder.take_interval((tick - 1) * interval_s, tick * interval_s, len(_current(targets)))
        )


# --- Request bodies ------------------------------------------------------------------------------


def request_body_from_metadata(metadata: dict[str, Any], rows: int = 1, seed: int = 0) -> bytes:
    """A random valid v2 request (JSON) for a model, built from its ``GET /v2/models/{name}`` answer."""
    rng = np.random.default_rng(seed)
    inputs = []
    for tensor in metadata["inputs"]:
        shape = [rows, *(int(d) for d in tensor["shape"][1:])]
        count = int(np.prod(shape))
        datatype = tensor["datatype"]
        if datatype in _INT_DATATYPES:
            data: list[Any] = rng.integers(0, 100, count).tolist()
        elif datatype == "BOOL":
            data = rng.integers(0, 2, count).astype(bool).tolist()
        else:
            data = [round(x, 4) for x in rng.standard_normal(count).tolist()]
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": datatype, "data": data})
    return json.dumps({"inputs": inputs}).encode()


async def fetch_request_body(base_url: str, model: str, rows: int = 1, seed: int = 0) -> bytes:
    """Ask the server for the model's tensors and build a valid random request for it."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{base_url.rstrip('/')}/v2/models/{model}") as response,
    ):
        response.raise_for_status()
        metadata = await response.json()
    return request_body_from_metadata(metadata, rows=rows, seed=seed)
