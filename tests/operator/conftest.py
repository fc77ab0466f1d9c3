"""Fixtures for the operator tests: kmock's Kubernetes emulator, the real operator, a real Prometheus.

Every API request the operator sends to kmock during this suite is written, at the end of the
session, to ``build/operator-api-requests.jsonl`` (one JSON object per line: method, path, query,
content_type). The chart's RBAC test reads that file to check the Role covers what the operator
really does. Requests the tests make themselves carry ``TEST_CLIENT_HEADER`` and are left out.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from slo_contract import metrics as m
from slo_operator import api
from slo_operator.prometheus import ServiceMetrics
from slo_operator.settings import OperatorConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
API_REQUEST_LOG = REPO_ROOT / "build" / "operator-api-requests.jsonl"
TEST_CLIENT_HEADER = "X-Slo-Test-Client"
NAMESPACE = "ns1"
ISVC_RESOURCE = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"


# ------------------------------------------------------------------------------ request recording


@pytest.fixture(scope="session")
def api_request_log() -> Iterator[list[dict[str, Any]]]:
    """Collects the operator's API requests; written once at session end (kept if none were made)."""
    records: list[dict[str, Any]] = []
    yield records
    if records:
        API_REQUEST_LOG.parent.mkdir(parents=True, exist_ok=True)
        tmp = API_REQUEST_LOG.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        tmp.replace(API_REQUEST_LOG)


def request_record(request: kmock.Request) -> dict[str, Any]:
    return {
        "method": str(request.method.value if hasattr(request.method, "value") else request.method),
        "path": request.url.path,
        "query": dict(request.params),
        "content_type": request.headers.get("Content-Type"),
    }


# ---------------------------------------------------------------------------- kmock + kubeconfig


class FlakyEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator, plus injected failures that happen *before* the object is stored.

    kmock applies every write to its store even when a reaction answers with an error, which no
    API server does; a 409 injected this way leaves the object untouched, as a real conflict would.
    """

    failures: list[tuple[Callable[[kmock.Request], bool], int, list[int]]]
    generated: int

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.failures = []
        self.generated = 0

    def fail(self, matcher: Callable[[kmock.Request], bool], *, status: int = 409, times: int = 1) -> None:
        self.failures.append((matcher, status, [times]))

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        # The API server's generateName (kopf names its Events that way); kmock keys objects by name.
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        generate = meta.get("generateName") if isinstance(meta, dict) else None
        if request.method.value == "POST" and generate and isinstance(meta, dict) and not meta.get("name"):
            self.generated += 1
            meta["name"] = f"{generate}{self.generated:05d}"
        for matcher, status, left in self.failures:
            if left[0] > 0 and request.headers.get(TEST_CLIENT_HEADER) is None and matcher(request):
                left[0] -= 1
                error = kmock.KubernetesError(
                    status=status, reason="Conflict", message="injected by the test"
                )
                return await self._render_error(error)
        return await super()._handle(request)  # type: ignore[no-any-return]


@dataclass
class Cluster:
    """kmock plus helpers: seed objects, read objects, filter the operator's requests."""

    mock: Any
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return str(self.mock.url).rstrip("/")

    async def create(self, path: str, body: Mapping[str, Any]) -> None:
        async with self.session.post(
            self.url + path, json=dict(body), headers={TEST_CLIENT_HEADER: "1"}
        ) as resp:
            assert resp.status < 300, await resp.text()

    async def create_isvc(self, body: Mapping[str, Any]) -> None:
        await self.create(f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}", body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> None:
        headers = {TEST_CLIENT_HEADER: "1", "Content-Type": "application/merge-patch+json"}
        async with self.session.patch(self.url + path, data=json.dumps(body), headers=headers) as resp:
            assert resp.status < 300, await resp.text()

    def get(self, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        try:
            obj = self.mock.objects[key]
        except KeyError:
            return None
        if obj.deleted:
            return None
        return dict(obj.raw)

    def requests(self) -> list[kmock.Request]:
        return [r for r in self.mock if r.headers.get(TEST_CLIENT_HEADER) is None]

    def writes(self, path_pattern: str, method: str | None = None) -> list[kmock.Request]:
        pattern = re.compile(path_pattern)
        return [
            r
            for r in self.requests()
            if pattern.search(r.url.path) and (method is None or request_record(r)["method"] == method)
        ]

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        posted = [r.data for r in self.writes(r"/events$", "POST")]
        return [e for e in posted if reason is None or e.get("reason") == reason]

    def isvc(self, name: str) -> dict[str, Any]:
        obj = self.get(ISVC_RESOURCE, name)
        assert obj is not None
        return obj

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        conditions = (self.isvc(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": FlakyEmulator}


@pytest.fixture
async def cluster(
    kmock: Any, api_request_log: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    """The emulated API server with the resources the operator uses, and a kubeconfig pointing at it."""
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=verbs
    )
    kmock.resources[ISVC_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND,
        namespaced=True,
        singular=api.SINGULAR,
        subresources={"status"},
        shortnames=set(api.SHORT_NAMES),
        verbs=verbs,
    )
    kmock.resources["apps/v1/deployments"] = kmock.ResourceInfo(
        kind="Deployment", namespaced=True, verbs=verbs
    )
    kmock.resources["v1/services"] = kmock.ResourceInfo(kind="Service", namespaced=True, verbs=verbs)
    kmock.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs=verbs)
    # Discovered only (kopf waits for it to exist); cluster-wide mode never lists namespaces.
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=verbs)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with aiohttp.ClientSession() as session:
        yield Cluster(kmock, session)
    api_request_log.extend(request_record(r) for r in kmock if r.headers.get(TEST_CLIENT_HEADER) is None)


# ------------------------------------------------------------------------------ metrics sources


@dataclass
class ScriptedReader:
    """A stand-in for PrometheusReader in the operator scenarios (the reader has its own tests
    against a real Prometheus; here the point is what the operator does with the figures).

    ``figures`` is returned as is; an exception instance is raised instead.
    """

    figures: ServiceMetrics | Exception | None
    calls: int = 0
    delegate: Any = None

    async def read(
        self, namespace: str, name: str, *, window_s: int, selector: Mapping[str, str], now: float
    ) -> ServiceMetrics | None:
        self.calls += 1
        if self.delegate is not None:
            result: ServiceMetrics | None = await self.delegate.read(
                namespace, name, window_s=window_s, selector=selector, now=now
            )
            return result
        if isinstance(self.figures, Exception):
            raise self.figures
        return self.figures


PROFILE = {1: 0.004, 2: 0.0045, 4: 0.0055, 8: 0.0075, 16: 0.0115, 32: 0.0195}


def busy_figures(qps: float, *, p99_s: float = 0.030, max_batch_size: int = 8) -> ServiceMetrics:
    return ServiceMetrics(
        qps=qps,
        p99_s=p99_s,
        request_count=qps * 60,
        queue_depth=1.0,
        mean_batch_size=4.0,
        mean_batch_duration_s=0.0055,
        max_batch_size=max_batch_size,
        profile=dict(PROFILE),
    )


# ------------------------------------------------------------------------------- the operator


@dataclass
class RunningOperator:
    """The operator in its own thread and event loop, as in production (kopf's own KopfRunner does
    the same): kopf's shutdown waits for every task of its loop, which must not include the test's.
    """

    memo: kopf.Memo
    thread: threading.Thread
    stop_flag: threading.Event
    errors: list[BaseException]

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the operator did not stop within 20 s"


@pytest.fixture
async def run_operator(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    """Start the real operator (kopf with our handlers) against kmock; stopped at teardown."""
    from slo_operator import handlers  # noqa: F401 - registers the handlers with kopf

    running: list[RunningOperator] = []

    async def start(reader: Any, priority: int | None = None, **config: Any) -> RunningOperator:
        settings = {"metrics_port": 0, "health_port": 0, "default_interval_seconds": 1.0, **config}
        memo = kopf.Memo(config=OperatorConfig(**settings), reader=reader)
        stop_flag = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=kopf.get_default_registry(),
                        clusterwide=True,  # kmock cannot serve /api/v1/namespaces (a namespace list)
                        memo=memo,
                        stop_flag=stop_flag,
                        priority=priority,
                    )
                )
            except BaseException as error:  # reported by the fixture
                errors.append(error)

        thread = threading.Thread(target=main, name="operator", daemon=True)
        thread.start()
        operator = RunningOperator(memo, thread, stop_flag, errors)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.thread.is_alive():
            await operator.stop()
    for operator in running:
        assert not operator.errors, operator.errors


async def eventually(check: Callable[[], Any], *, within: float = 15.0, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy (bounded); return its value."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def isvc_manifest(name: str = "svc", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slo": {"p99LatencyMs": 100},
        "replicas": {"min": 1, "max": 8},
        "batching": {"maxBatchSize": 32},
        "scaling": {"intervalSeconds": 1, "scaleDownStabilizationSeconds": 300},
        "model": {"image": "example.org/model-server:1", "bundledModel": "mlp", "gpusPerReplica": 1},
    }
    body.update(spec)
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",  # kopf's JSON patches test it; kmock keeps it as given
        },
        "spec": body,
    }


# -------------------------------------------------------------------------- a real Prometheus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeTraffic:
    """Known series for one service, as a model server would export them: counters grow at fixed rates."""

    qps: float
    latency_fractions: Mapping[float, float] = field(
        default_factory=lambda: {0.010: 0.90, 0.020: 0.98, 0.050: 1.0}
    )
    """Cumulative fraction of requests at or below each bucket bound (the last must be 1.0)."""
    queue_depth: float = 3.0
    max_batch_size: int = 16
    batches_per_s: float = 10.0
    mean_batch_size: float = 5.0
    mean_batch_duration_s: float = 0.006
    profile: Mapping[int, float] = field(default_factory=lambda: {1: 0.004, 8: 0.0075})


class TrafficCollector:
    """prometheus_client collector whose counters are rate × elapsed time: exact, known rates."""

    def __init__(self, traffic: FakeTraffic) -> None:
        self.traffic = traffic
        self.start = time.time()

    def collect(self) -> Iterator[Any]:
        t = self.traffic
        elapsed = time.time() - self.start
        requests = t.qps * elapsed
        total = CounterMetricFamily(
            m.REQUESTS_TOTAL.removesuffix("_total"), "requests", labels=[m.CODE_LABEL]
        )
        total.add_metric(["200"], requests)
        yield total
        buckets = [
            (f"{bound}", requests * fraction) for bound, fraction in sorted(t.latency_fractions.items())
        ]
        buckets.append(("+Inf", requests))
        yield HistogramMetricFamily(
            m.REQUEST_DURATION_SECONDS, "latency", buckets=buckets, sum_value=requests * 0.01
        )
        batches = t.batches_per_s * elapsed
        yield HistogramMetricFamily(
            m.BATCH_SIZE, "batch size", buckets=[("+Inf", batches)], sum_value=batches * t.mean_batch_size
        )
        yield HistogramMetricFamily(
            m.BATCH_DURATION_SECONDS,
            "batch duration",
            buckets=[("+Inf", batches)],
            sum_value=batches * t.mean_batch_duration_s,
        )
        yield GaugeMetricFamily(m.QUEUE_DEPTH, "queue", value=t.queue_depth)
        yield GaugeMetricFamily(m.MAX_BATCH_SIZE, "max batch", value=t.max_batch_size)
        profile = GaugeMetricFamily(m.PROFILE_BATCH_DURATION_SECONDS, "profile", labels=[m.BATCH_SIZE_LABEL])
        for size, seconds in t.profile.items():
            profile.add_metric([str(size)], seconds)
        yield profile


class Exporter:
    """A loopback HTTP endpoint serving one TrafficCollector in the text exposition format."""

    def __init__(self, traffic: FakeTraffic) -> None:
        registry = CollectorRegistry()
        registry.register(TrafficCollector(traffic))  # type: ignore[arg-type]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PrometheusProcess:
    """``/usr/bin/prometheus`` on a loopback port with a temp data dir; scrapes every second."""

    BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"

    def __init__(self, targets: Mapping[str, tuple[int, Mapping[str, str]]], port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="slo-prom-"))
        scrape_configs = [
            {
                "job_name": job,
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"], "labels": dict(labels)}],
            }
            for job, (target_port, labels) in targets.items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [
                self.BINARY,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "prometheus.log").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    import urllib.request

                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


PROMETHEUS_WINDOW_S = 5
"""Rate window of the tests against the real Prometheus (which scrapes every second)."""


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusProcess]:
    """A real Prometheus scraping two fake services in ``ns1``: ``svc-a`` at 50 qps, ``svc-b`` idle.

    Ready once a whole rate window has been scraped (rates are exact from then on); stopped at
    the end of the session.
    """
    import asyncio as _asyncio

    from slo_operator.prometheus import PrometheusReader

    busy, idle = Exporter(FakeTraffic(qps=50.0)), Exporter(FakeTraffic(qps=0.0))
    server = PrometheusProcess(
        {
            "busy": (busy.port, {m.NAMESPACE_LABEL: NAMESPACE, m.INFERENCESERVICE_LABEL: "svc-a"}),
            "idle": (idle.port, {m.NAMESPACE_LABEL: NAMESPACE, m.INFERENCESERVICE_LABEL: "svc-b"}),
        }
    )
    try:
        server.start()
        reader = PrometheusReader(server.url, timeout_s=2.0, tick_seconds=0.001)
        window = PROMETHEUS_WINDOW_S

        def read(name: str) -> ServiceMetrics | None:
            return _asyncio.run(reader.read(NAMESPACE, name, window_s=window, selector={}, now=time.time()))

        first_seen: float | None = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            busy_now, idle_now = read("svc-a"), read("svc-b")
            if busy_now and busy_now.qps and idle_now:
                first_seen = first_seen or time.monotonic()
                if time.monotonic() - first_seen > window + 1.5:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("Prometheus never had both services' rates")
        reader.close()
        yield server
    finally:
        server.stop()
        busy.close()
        idle.close()
