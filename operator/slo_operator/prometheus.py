"""The Prometheus reader: one query per metric for all InferenceServices, shared by every loop.

Reads must not grow with the number of services: per tick (a slot of ``tick_seconds``) and per
(window, selector), each metric is queried once with ``sum by (namespace, inferenceservice)``
and the result is cached; every service's control step picks its own row from it. The
blocking ``prometheus-api-client`` runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from slo_contract import metrics as m

SERVICE_KEY = (m.NAMESPACE_LABEL, m.INFERENCESERVICE_LABEL)
_BY = f"{m.NAMESPACE_LABEL}, {m.INFERENCESERVICE_LABEL}"


class MetricsUnavailable(Exception):
    """Prometheus could not be read (unreachable, slow, erroring); the message says which."""


@dataclass(frozen=True)
class ServiceMetrics:
    """One service's figures at one tick. ``None``: not known (no series, or NaN)."""

    qps: float | None
    p99_s: float | None
    request_count: float | None
    queue_depth: float | None
    mean_batch_size: float | None
    mean_batch_duration_s: float | None
    max_batch_size: int | None
    profile: Mapping[int, float] = field(default_factory=dict)

    @property
    def has_traffic(self) -> bool:
        return bool(self.qps)


Selector = tuple[tuple[str, str], ...]


def _matchers(selector: Selector) -> str:
    parts = [f'{label}="{_escape(value)}"' for label, value in selector]
    return "{" + ", ".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def queries(window_s: int, selector: Selector = ()) -> dict[str, str]:
    """The PromQL per figure, for every service at once (exposed for tests and docs)."""
    sel = _matchers(selector)
    w = f"{int(window_s)}s"

    def mean(histogram: str) -> str:
        return (
            f"sum by ({_BY}) (rate({histogram}_sum{sel}[{w}]))"
            f" / sum by ({_BY}) (rate({histogram}_count{sel}[{w}]))"
        )

    return {
        "qps": f"sum by ({_BY}) (rate({m.REQUESTS_TOTAL}{sel}[{w}]))",
        "request_count": f"sum by ({_BY}) (increase({m.REQUESTS_TOTAL}{sel}[{w}]))",
        "p99_s": (
            f"histogram_quantile(0.99, sum by ({_BY}, le) "
            f"(rate({m.REQUEST_DURATION_SECONDS}_bucket{sel}[{w}])))"
        ),
        "queue_depth": f"sum by ({_BY}) ({m.QUEUE_DEPTH}{sel})",
        "mean_batch_size": mean(m.BATCH_SIZE),
        "mean_batch_duration_s": mean(m.BATCH_DURATION_SECONDS),
        "max_batch_size": f"max by ({_BY}) ({m.MAX_BATCH_SIZE}{sel})",
        "profile": f"avg by ({_BY}, {m.BATCH_SIZE_LABEL}) ({m.PROFILE_BATCH_DURATION_SECONDS}{sel})",
    }


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass
class FleetMetrics:
    """Every service's rows of one tick, keyed by (namespace, inferenceservice)."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, figure: str, result: list[dict[str, Any]]) -> None:
        for series in result:
            labels = series.get("metric", {})
            key = (labels.get(m.NAMESPACE_LABEL, ""), labels.get(m.INFERENCESERVICE_LABEL, ""))
            row = self.rows.setdefault(key, {})
            value = _number(series.get("value", (None, None))[1])
            if figure == "profile":
                batch = labels.get(m.BATCH_SIZE_LABEL)
                if batch is not None and value is not None:
                    row.setdefault("profile", {})[int(float(batch))] = value
            else:
                row[figure] = value

    def service(self, namespace: str, name: str) -> ServiceMetrics | None:
        """None when Prometheus holds no series at all for the service (not scraped, wrong labels)."""
        row = self.rows.get((namespace, name))
        if row is None or row.get("qps", ...) is ...:
            return None
        max_batch = row.get("max_batch_size")
        return ServiceMetrics(
            qps=row.get("qps"),
            p99_s=row.get("p99_s"),
            request_count=row.get("request_count"),
            queue_depth=row.get("queue_depth"),
            mean_batch_size=row.get("mean_batch_size"),
            mean_batch_duration_s=row.get("mean_batch_duration_s"),
            max_batch_size=int(max_batch) if max_batch is not None else None,
            profile=dict(row.get("profile", {})),
        )


class PrometheusReader:
    """Shared by every control loop; construct once per operator (the kopf memo holds it)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        bearer_token_file: str | None = None,
        ca_file: str | None = None,
        tick_seconds: float = 15.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        session = requests.Session()
        session.verify = ca_file if ca_file else True
        # No client-side retries: the control loop retries with its own backoff, and a slow
        # Prometheus must cost one timeout, not several.
        self._client = PrometheusConnect(url=url, session=session, retry=Retry(total=0), timeout=timeout_s)
        self._client._timeout = timeout_s
        self._bearer_token_file = bearer_token_file
        self._tick_s = tick_seconds
        self._cache: dict[tuple[int, Selector, int], asyncio.Task[FleetMetrics]] = {}
        self.queries_sent = 0
        """How many PromQL queries went out (tests check it does not grow with services)."""
        self.url = url

    def _headers(self) -> dict[str, str] | None:
        if not self._bearer_token_file:
            return None
        try:
            with open(self._bearer_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()  # re-read each time: projected tokens rotate
        except OSError as error:
            raise MetricsUnavailable(
                f"cannot read bearer token file {self._bearer_token_file}: {error}"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    def _fetch_blocking(self, window_s: int, selector: Selector) -> FleetMetrics:
        self._client.headers = self._headers()
        fleet = FleetMetrics()
        for figure, promql in queries(window_s, selector).items():
            self.queries_sent += 1
            try:
                result = self._client.custom_query(promql)
            except requests.RequestException as error:
                if isinstance(error, requests.Timeout) or "timed out" in str(error).lower():
                    message = f"Prometheus at {self.url} did not answer within the timeout"
                else:
                    message = f"Prometheus at {self.url} unreachable: {type(error).__name__}"
                raise MetricsUnavailable(message) from None
            except Exception as error:  # PrometheusApiClientException and malformed answers
                raise MetricsUnavailable(f"Prometheus query failed: {str(error)[:200]}") from None
            fleet.add(figure, result)
        return fleet

    async def fleet(self, *, window_s: int, selector: Selector, now: float) -> FleetMetrics:
        """This tick's figures for every service, fetched once and shared by concurrent callers."""
        key = (int(now // self._tick_s), selector, window_s)
        task = self._cache.get(key)
        if task is None:
            for stale in [k for k in self._cache if k[0] < key[0]]:
                del self._cache[stale]
            task = asyncio.ensure_future(asyncio.to_thread(self._fetch_blocking, window_s, selector))
            self._cache[key] = task
        try:
            return await asyncio.shield(task)
        except MetricsUnavailable:
            self._cache.pop(key, None)  # an error is not cached: the next step asks again
            raise

    async def read(
        self, namespace: str, name: str, *, window_s: int, selector: Mapping[str, str], now: float
    ) -> ServiceMetrics | None:
        """One service's figures; None when it has no series. Raises MetricsUnavailable."""
        fleet = await self.fleet(window_s=window_s, selector=tuple(sorted(selector.items())), now=now)
        return fleet.service(namespace, name)

    def close(self) -> None:
        self._client.close()
