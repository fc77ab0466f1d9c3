"""Every Prometheus series of the server, in one registry per server instance.

Names, labels and buckets come from :mod:`slo_contract.metrics`: the operator's PromQL reads exactly
these. A registry per instance (not the global one) lets tests run several servers in one process.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from slo_contract import metrics as names

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ``*_created`` series double the exposition and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _base(name: str, suffix: str) -> str:
    # prometheus_client appends the suffix itself to counters; pass the base name.
    return name[: -len(suffix)] if name.endswith(suffix) else name


class ServerMetrics:
    """The server's series, already bound to its ``model`` label."""

    def __init__(self, model_name: str, max_batch_size: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        label = [names.MODEL_LABEL]
        self._requests = Counter(
            _base(names.REQUESTS_TOTAL, "_total"),
            "Answered inference requests by HTTP status code.",
            [names.MODEL_LABEL, names.CODE_LABEL],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            names.REQUEST_DURATION_SECONDS,
            "Arrival to response of successful inference requests, queueing included.",
            label,
            buckets=names.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        ).labels(model_name)
        self.queue_duration = Histogram(
            names.QUEUE_DURATION_SECONDS,
            "Arrival to the start of the batch that carries the request.",
            label,
            buckets=names.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        ).labels(model_name)
        self.batch_size = Histogram(
            names.BATCH_SIZE,
            "Rows in each executed batch.",
            label,
            buckets=names.BATCH_SIZE_BUCKETS,
            registry=self.registry,
        ).labels(model_name)
        self.batch_duration = Histogram(
            names.BATCH_DURATION_SECONDS,
            "One model execution, host-device copies included.",
            label,
            buckets=names.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        ).labels(model_name)
        self.queue_depth = Gauge(
            names.QUEUE_DEPTH, "Requests waiting for a batch.", label, registry=self.registry
        ).labels(model_name)
        self.max_batch_size = Gauge(
            names.MAX_BATCH_SIZE, "Effective MAX_BATCH_SIZE.", label, registry=self.registry
        ).labels(model_name)
        self.max_batch_size.set(max_batch_size)
        self._profile = Gauge(
            names.PROFILE_BATCH_DURATION_SECONDS,
            "One model execution per batch size, timed at start-up.",
            [names.MODEL_LABEL, names.BATCH_SIZE_LABEL],
            registry=self.registry,
        )

    def count_request(self, code: int) -> None:
        self._requests.labels(self.model_name, str(code)).inc()

    def set_profile(self, seconds_by_batch_size: dict[int, float]) -> None:
        for batch_size, seconds in seconds_by_batch_size.items():
            self._profile.labels(self.model_name, str(batch_size)).set(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
