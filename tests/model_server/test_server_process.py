"""The real entry point as a subprocess on 127.0.0.1: tritonclient, the load generator, metrics, drain."""

from __future__ import annotations

import asyncio
import math
import re
import signal
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.http as triton

from model_server.loadgen import fetch_request_body, run_load, traces
from model_server.model import ServedModel
from slo_contract import metrics as names

from .conftest import ServerProcess, metric_samples

pytestmark = pytest.mark.slow


def histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile``: linear interpolation inside the bucket holding the rank."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return buckets[-1][0]


def request_buckets(url: str, model: str) -> list[tuple[float, float]]:
    samples = metric_samples(url)
    return [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == f"{names.REQUEST_DURATION_SECONDS}_bucket" and dict(labels)["model"] == model
    ]


def ok_count(url: str) -> float:
    return metric_samples(url).get((names.REQUESTS_TOTAL, (("code", "200"), ("model", "ranking"))), 0.0)


def test_tritonclient_speaks_to_the_server(server: ServerProcess, ranking_model: ServedModel) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("ranking")
        metadata = client.get_model_metadata("ranking")
        assert [i["name"] for i in metadata["inputs"]] == ["dense_features", "sparse_ids"]
        batch = ranking_model.example_batch(3, seed=7)
        expected = ranking_model.predict(batch)["click_probability"]
        for binary in (False, True):
            inputs = []
            for spec in ranking_model.inputs:
                tensor = triton.InferInput(spec.name, list(batch[spec.name].shape), spec.datatype)
                tensor.set_data_from_numpy(batch[spec.name], binary_data=binary)
                inputs.append(tensor)
            result = client.infer(
                "ranking",
                inputs,
                outputs=[triton.InferRequestedOutput("click_probability", binary_data=False)],
            )
            scores = result.as_numpy("click_probability")
            assert scores.shape == (3, 1)
            assert np.allclose(scores, expected, atol=1e-5), "same seeded weights in both processes"
        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            client.get_model_metadata("nope")
    finally:
        client.close()


async def test_loadgen_achieves_the_offered_rate_and_counts_match_the_server(server: ServerProcess) -> None:
    before = ok_count(server.url)
    body = await fetch_request_body(server.url, "ranking")
    arrivals = traces.arrival_times(traces.constant(60, duration_s=3), seed=3)
    intervals: list[Any] = []
    summary = await run_load([server.url], "ranking", body, arrivals, on_interval=intervals.append)
    assert summary.errors == {}
    assert summary.sent == len(arrivals)
    assert summary.ok == summary.sent
    assert summary.achieved_qps == pytest.approx(summary.offered_qps, rel=0.15)
    assert 0 < summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.p999_ms <= summary.max_ms
    assert ok_count(server.url) - before == summary.ok
    assert sum(i.ok for i in intervals) == summary.ok
    assert len(intervals) >= 3


async def test_a_p99_can_be_read_from_the_exposed_buckets(server: ServerProcess) -> None:
    body = await fetch_request_body(server.url, "ranking")
    summary = await run_load(
        [server.url], "ranking", body, traces.arrival_times(traces.constant(40, duration_s=2), seed=4)
    )
    buckets = request_buckets(server.url, "ranking")
    count = max(c for _, c in buckets)
    assert count >= summary.ok
    p50 = histogram_quantile(0.5, buckets)
    p99 = histogram_quantile(0.99, buckets)
    assert 0 < p50 <= p99 < 10.0
    # The server's view (arrival to response) cannot be slower than the client's, which adds the network.
    assert p50 <= summary.p99_ms / 1000 * 1.5 + 0.002
    profile = {
        dict(labels)["batch_size"]: value
        for (name, labels), value in metric_samples(server.url).items()
        if name == names.PROFILE_BATCH_DURATION_SECONDS
    }
    assert set(profile) == {"1", "2", "4", "8"}
    assert all(v > 0 for v in profile.values())


async def test_sigterm_drains_every_accepted_request_and_exits_0() -> None:
    """Steady overload (queue building), SIGTERM mid-stream: every request that got in gets its answer."""
    process = ServerProcess(MAX_BATCH_SIZE="1", MAX_QUEUE_SIZE="10000").wait_ready()
    try:
        outcomes: list[tuple[float, float, str]] = []
        stop_sending = asyncio.Event()
        loop = asyncio.get_running_loop()
        url = f"{process.url}/v2/models/ranking/infer"
        body = await fetch_request_body(process.url, "ranking")
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:

            async def one() -> None:
                sent = loop.time()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        outcome = str(response.status)
                except aiohttp.ClientConnectorError:
                    outcome = "refused"
                except (aiohttp.ClientError, TimeoutError) as error:
                    outcome = type(error).__name__
                if outcome != "200":
                    stop_sending.set()  # as a load balancer would, once the endpoint says it is going
                outcomes.append((sent, loop.time(), outcome))

            async def sigterm_later() -> tuple[float, int]:
                await asyncio.sleep(1.0)
                process.process.send_signal(signal.SIGTERM)
                at = loop.time()
                for _ in range(50):
                    async with session.get(f"{process.url}/v2/health/ready") as response:
                        if response.status == 503:
                            return at, 503
                    await asyncio.sleep(0.01)
                return at, 200

            terminator = asyncio.ensure_future(sigterm_later())
            tasks = []
            start = loop.time()
            for offset in traces.arrival_times(traces.constant(300, duration_s=4), seed=5):
                await asyncio.sleep(max(0.0, start + offset - loop.time()))
                if stop_sending.is_set():
                    break
                tasks.append(asyncio.ensure_future(one()))
            sigterm_at, ready_status = await terminator
            await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(process.terminate)
        log = process.log()
    finally:
        process.close()
    assert exit_code == 0, log
    assert ready_status == 503, "readiness must turn false at once on SIGTERM"
    kinds = {outcome for _, _, outcome in outcomes}
    assert kinds <= {"200", "503", "refused"}, f"an accepted request was dropped: {kinds}"
    answered_after_sigterm = [o for s, d, o in outcomes if s < sigterm_at < d and o == "200"]
    assert answered_after_sigterm, "requests queued at SIGTERM were answered during the drain"
    server_ok = re.search(r"answered requests by code: .*?\b200=(\d+)", log)
    assert server_ok is not None, log
    assert int(server_ok.group(1)) == sum(1 for *_, o in outcomes if o == "200")
