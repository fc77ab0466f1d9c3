"""The load generator against real in-process servers: round robin, a changing target set, intervals, CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestServer

from model_server.dataplane import DataPlane
from model_server.loadgen import IntervalStats, fetch_request_body, run_load, traces
from model_server.loadgen.__main__ import build_parser, profile_from_args
from model_server.metrics import ServerMetrics
from model_server.model import ServedModel, TensorSpec
from model_server.rest import create_app


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.fixture
async def two_servers() -> AsyncIterator[list[tuple[str, ServerMetrics]]]:
    servers: list[tuple[TestServer, DataPlane]] = []
    out = []
    for _ in range(2):
        model = ServedModel(
            Doubler(),
            (TensorSpec("x", "FP32", (2,)),),
            (TensorSpec("y", "FP32", (2,)),),
            torch.device("cpu"),
            "t",
        )
        metrics = ServerMetrics("m", 8)
        plane = DataPlane(model, "m", 8, 1.0, 100, metrics)
        plane.start()
        server = TestServer(create_app(plane), host="127.0.0.1")
        await server.start_server()
        servers.append((server, plane))
        out.append((str(server.make_url("")).rstrip("/"), metrics))
    yield out
    for server, plane in servers:
        await server.close()
        await plane.close()


def answered(metrics: ServerMetrics) -> int:
    return int(
        sum(
            s.value for f in metrics.registry.collect() for s in f.samples if s.name == "model_requests_total"
        )
    )


async def test_round_robin_over_a_target_set_that_changes_during_the_run(
    two_servers: list[tuple[str, ServerMetrics]],
) -> None:
    (url_a, metrics_a), (url_b, metrics_b) = two_servers
    body = await fetch_request_body(url_a, "m")
    targets = [url_a]
    intervals: list[IntervalStats] = []

    async def add_second_target() -> None:
        await asyncio.sleep(0.6)
        targets.append(url_b)

    arrivals = traces.arrival_times(traces.constant(100, duration_s=1.6), seed=2)
    adder = asyncio.ensure_future(add_second_target())
    summary = await run_load(targets, "m", body, arrivals, interval_s=0.5, on_interval=intervals.append)
    await adder
    assert summary.errors == {}
    assert summary.ok == len(arrivals)
    assert answered(metrics_a) + answered(metrics_b) == summary.ok
    assert answered(metrics_a) > answered(metrics_b) > 0.2 * summary.ok
    assert intervals[0].targets == 1
    assert intervals[-1].targets == 2
    assert sum(i.ok for i in intervals) == summary.ok


async def test_failures_are_counted_by_kind_and_a_callable_target_list_is_read_at_each_send(
    two_servers: list[tuple[str, ServerMetrics]],
) -> None:
    url, _ = two_servers[0]
    body = await fetch_request_body(url, "m")
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens there
    calls = 0

    def current() -> list[str]:
        nonlocal calls
        calls += 1
        return [url, closed_port] if calls <= 20 else []

    summary = await run_load(current, "missing-model", body, np.linspace(0, 0.3, 30))
    assert summary.ok == 0
    assert summary.errors == {"http_404": 10, "connect": 10, "no_target": 10}
    assert calls == 30


async def test_latency_is_measured_from_the_scheduled_time_so_a_stall_is_not_hidden(
    two_servers: list[tuple[str, ServerMetrics]],
) -> None:
    """The generator's own loop stalls for 0.3 s: the requests due meanwhile must show that delay."""
    url, _ = two_servers[0]
    body = await fetch_request_body(url, "m")
    stalled = asyncio.Event()

    def on_interval(_: IntervalStats) -> None:
        if not stalled.is_set():
            stalled.set()
            import time

            time.sleep(0.3)  # blocks the event loop, as a slow client would

    summary = await run_load(
        [url], "m", body, np.linspace(0, 0.6, 60), interval_s=0.1, on_interval=on_interval
    )
    assert summary.ok == 60
    assert summary.max_ms >= 200


def test_cli_arguments_describe_rate_profiles(tmp_path: Path) -> None:
    parser = build_parser()
    constant = profile_from_args(parser.parse_args(["--url", "http://x:1", "--qps", "50", "--duration", "4"]))
    assert constant.rates_qps == (50.0,) * 4
    ramp = profile_from_args(
        parser.parse_args(["--url", "u", "--qps", "10", "--ramp-to", "50", "--duration", "4"])
    )
    assert ramp.rates_qps[0] < ramp.rates_qps[-1] <= 50
    step = profile_from_args(
        parser.parse_args(["--url", "u", "--qps", "1", "--step-to", "9", "--duration", "4"])
    )
    assert step.rates_qps == (1.0, 1.0, 9.0, 9.0)
    trace = tmp_path / "trace.csv"
    trace.write_text("second_offset,requests\n0,5\n1,10\n2,20\n3,10\n")
    replay = profile_from_args(
        parser.parse_args(["--url", "u", "--trace", str(trace), "--peak-qps", "100", "--duration", "3"])
    )
    assert replay.rates_qps == (25.0, 50.0, 100.0)
    for bad in (["--url", "u"], ["--url", "u", "--qps", "1", "--ramp-to", "2", "--step-to", "3"]):
        with pytest.raises(ValueError, match="--"):
            profile_from_args(parser.parse_args(bad))
    with pytest.raises(SystemExit):
        parser.parse_args(["--url", "u", "--qps", "-5"])


def test_cli_runs_against_a_real_server_and_prints_a_json_summary(capsys: Any) -> None:
    """Uses the in-process bundled-model-free path: the CLI main against an aiohttp server thread."""
    import json
    import threading

    from aiohttp import web

    from model_server.loadgen.__main__ import main

    loop = asyncio.new_event_loop()
    model = ServedModel(
        Doubler(),
        (TensorSpec("x", "FP32", (2,)),),
        (TensorSpec("y", "FP32", (2,)),),
        torch.device("cpu"),
        "t",
    )
    plane = DataPlane(model, "m", 4, 1.0, 100, ServerMetrics("m", 4))
    runner = web.AppRunner(create_app(plane))
    started = threading.Event()
    port_box: list[int] = []

    async def serve() -> None:
        plane.start()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_box.append(runner.addresses[0][1])
        started.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True
    )
    thread.start()
    assert started.wait(10)
    try:
        with pytest.raises(SystemExit) as exited:
            main(
                [
                    "--url",
                    f"http://127.0.0.1:{port_box[0]}",
                    "--model",
                    "m",
                    "--qps",
                    "40",
                    "--duration",
                    "1",
                    "--json",
                ]
            )
        assert exited.value.code == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["ok"] == summary["sent"] > 0
        assert summary["errors"] == {}
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        asyncio.run_coroutine_threadsafe(plane.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
