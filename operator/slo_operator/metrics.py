"""The operator's own metrics, served on METRICS_PORT at /metrics (not the model server's)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

DECISIONS = Counter(
    "slo_autoscaler_decisions_total",
    "Control steps by outcome: applied, unchanged, dry_run, off, held (metrics unavailable), error.",
    ["namespace", "inferenceservice", "outcome"],
)
RECONCILE_DURATION = Histogram(
    "slo_autoscaler_reconcile_duration_seconds",
    "Duration of one control step (Prometheus read, decision, write).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROMETHEUS_ERRORS = Counter(
    "slo_autoscaler_prometheus_errors_total",
    "Control steps whose Prometheus read failed or found no series.",
    ["namespace", "inferenceservice"],
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Start the /metrics endpoint in a background thread (0: do not serve)."""
    if port:
        start_http_server(port, addr=address)
