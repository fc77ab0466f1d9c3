"""Every Prometheus metric and label name that crosses the operator/model-server boundary.

The model server exports these names; the operator's PromQL queries them. Names are
the exposed series names (a counter's name includes ``_total``; a histogram's name is the
base to which Prometheus appends ``_bucket``, ``_sum`` and ``_count``).
"""

from typing import Final

# --- Series exported by every model server pod -------------------------------------------
REQUESTS_TOTAL: Final = "model_requests_total"
"""Counter of answered requests, labelled by ``code`` (HTTP status) and ``model``."""

REQUEST_DURATION_SECONDS: Final = "model_request_duration_seconds"
"""Histogram: arrival to response, queueing included. The P99 the SLO is about."""

QUEUE_DURATION_SECONDS: Final = "model_queue_duration_seconds"
"""Histogram: arrival to the start of the batch that carries the request."""

BATCH_SIZE: Final = "model_batch_size"
"""Histogram of the sizes of the batches actually executed."""

BATCH_DURATION_SECONDS: Final = "model_batch_duration_seconds"
"""Histogram: one model execution (one batch), host-to-device copies included."""

QUEUE_DEPTH: Final = "model_queue_depth"
"""Gauge: requests waiting for a batch right now."""

MAX_BATCH_SIZE: Final = "model_max_batch_size"
"""Gauge: the effective ``MAX_BATCH_SIZE`` of this server."""

PROFILE_BATCH_DURATION_SECONDS: Final = "model_profile_batch_duration_seconds"
"""Gauge per ``batch_size``: one model execution timed at start-up (the planner's profile)."""

# --- Labels ------------------------------------------------------------------------------
MODEL_LABEL: Final = "model"
CODE_LABEL: Final = "code"
BATCH_SIZE_LABEL: Final = "batch_size"

INFERENCESERVICE_LABEL: Final = "inferenceservice"
"""Label that Prometheus service discovery puts on every series of an InferenceService's pods."""

NAMESPACE_LABEL: Final = "namespace"
POD_LABEL: Final = "pod"

INFERENCESERVICE_POD_LABEL: Final = "slo-autoscaler.io/inferenceservice"
"""Kubernetes pod label naming the owning InferenceService; relabelled to ``inferenceservice``."""

# --- Histogram buckets -------------------------------------------------------------------
LATENCY_BUCKETS_SECONDS: Final[tuple[float, ...]] = (
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.008,
    0.010,
    0.0125,
    0.015,
    0.0175,
    0.020,
    0.025,
    0.030,
    0.035,
    0.040,
    0.050,
    0.060,
    0.070,
    0.080,
    0.090,
    0.100,
    0.125,
    0.150,
    0.175,
    0.200,
    0.250,
    0.300,
    0.400,
    0.500,
    0.750,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
)
"""Fine enough to read a P99 between 1 ms and 10 s to within about 15 %."""

BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
