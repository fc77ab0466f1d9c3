"""The PromQL of the reader against a real Prometheus (``/usr/bin/prometheus``) scraping known series.

Two loopback exporters play two services' pods (labels ``namespace``/``inferenceservice`` come
from the scrape config, as relabelling of the pod label does in a cluster): one with traffic at
a fixed rate and a known latency distribution, one with its series present but no traffic.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from slo_operator.prometheus import MetricsUnavailable, PrometheusReader, queries

from .conftest import PROMETHEUS_WINDOW_S as WINDOW_S
from .conftest import PrometheusProcess, free_port

pytestmark = pytest.mark.slow


async def test_figures_of_a_busy_service(prometheus: PrometheusProcess) -> None:
    reader = PrometheusReader(prometheus.url, timeout_s=2.0)
    figures = await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={}, now=time.time())
    assert figures is not None
    assert figures.qps == pytest.approx(50.0, rel=0.1)
    assert figures.has_traffic
    # 98 % of requests at or below 20 ms, all at or below 50 ms: the 99th percentile interpolates
    # half-way into the (20 ms, 50 ms] bucket.
    assert figures.p99_s == pytest.approx(0.035, rel=0.05)
    assert figures.request_count == pytest.approx(50.0 * WINDOW_S, rel=0.15)
    assert figures.queue_depth == 3.0
    assert figures.max_batch_size == 16
    assert figures.mean_batch_size == pytest.approx(5.0, rel=0.02)
    assert figures.mean_batch_duration_s == pytest.approx(0.006, rel=0.02)
    assert figures.profile == {1: 0.004, 8: 0.0075}
    reader.close()


async def test_no_traffic_is_not_no_metrics(prometheus: PrometheusProcess) -> None:
    reader = PrometheusReader(prometheus.url, timeout_s=2.0)
    idle = await reader.read("ns1", "svc-b", window_s=WINDOW_S, selector={}, now=time.time())
    assert idle is not None  # series present...
    assert idle.qps == 0.0
    assert not idle.has_traffic
    assert idle.p99_s is None  # a quantile of nothing is NaN in PromQL, None here
    missing = await reader.read("ns1", "svc-unknown", window_s=WINDOW_S, selector={}, now=time.time())
    assert missing is None  # no series at all
    reader.close()


async def test_one_query_per_figure_for_all_services_per_tick(prometheus: PrometheusProcess) -> None:
    reader = PrometheusReader(prometheus.url, timeout_s=2.0, tick_seconds=3600)
    now = time.time()
    services = [("ns1", "svc-a"), ("ns1", "svc-b"), ("ns1", "svc-unknown")] * 5
    results = await asyncio.gather(
        *(reader.read(ns, name, window_s=WINDOW_S, selector={}, now=now) for ns, name in services)
    )
    assert reader.queries_sent == len(queries(WINDOW_S))  # not 15 x that
    assert results[0] is not None
    assert results[1] is not None
    assert results[2] is None
    reader.close()


async def test_selector_override_narrows_every_query(prometheus: PrometheusProcess) -> None:
    reader = PrometheusReader(prometheus.url, timeout_s=2.0)
    matched = await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={"job": "busy"}, now=time.time())
    other = await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={"job": "idle"}, now=time.time())
    assert matched is not None
    assert matched.qps
    assert other is None
    assert all('job="busy"' in q for q in queries(WINDOW_S, (("job", "busy"),)).values())
    reader.close()


async def test_query_errors_are_metrics_unavailable(prometheus: PrometheusProcess) -> None:
    reader = PrometheusReader(prometheus.url, timeout_s=2.0)
    with pytest.raises(MetricsUnavailable, match="query failed"):
        await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={"bad-label": "x"}, now=time.time())
    reader.close()


async def test_unreachable_prometheus() -> None:
    reader = PrometheusReader(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={}, now=time.time())
    reader.close()


async def test_slow_prometheus_times_out() -> None:
    """A socket that accepts connections and never answers: one timeout, no client-side retries."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        reader = PrometheusReader(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(MetricsUnavailable, match="did not answer"):
            await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={}, now=time.time())
        assert time.monotonic() - started < 2.0
        reader.close()


async def test_bearer_token_is_read_from_its_file(prometheus: PrometheusProcess, tmp_path: object) -> None:
    """Prometheus ignores the header, so this checks the file handling: a missing file is an error."""
    reader = PrometheusReader(prometheus.url, bearer_token_file="/nonexistent/token")
    with pytest.raises(MetricsUnavailable, match="bearer token file"):
        await reader.read("ns1", "svc-a", window_s=WINDOW_S, selector={}, now=time.time())
    reader.close()
