"""The InferenceService API: pydantic models are the single source of truth for spec and status.

``crdgen`` turns these models into ``crds/inferenceservice.yaml`` (schema, defaults, bounds,
CEL rules, printer columns); ``cli validate`` checks manifests against the same models and the
same CEL rules; the operator parses every object it handles with them. Field descriptions here
are what ``kubectl explain`` shows, so they are written for the person editing a manifest.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP: Final = "slo-autoscaler.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceService"
PLURAL: Final = "inferenceservices"
SINGULAR: Final = "inferenceservice"
SHORT_NAMES: Final[tuple[str, ...]] = ("sloisvc",)
CATEGORIES: Final[tuple[str, ...]] = ("slo-autoscaler",)

CEL_RULES_KEY: Final = "x-kubernetes-validations"


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, Any]:
    """One CEL rule as the apiserver wants it; ``field_path`` points the error at the offending field."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class _ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error (typos do not pass)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ------------------------------------------------------------------------------------------- spec


class ScalingMode(enum.StrEnum):
    AUTO = "Auto"
    """Decide and apply."""
    DRY_RUN = "DryRun"
    """Decide and report in status and events; change nothing."""
    OFF = "Off"
    """Neither decide nor change anything; only the owned Deployment and Service are kept in shape."""


class SLOSpec(_ApiModel):
    """The service-level objective the operator keeps."""

    p99_latency_ms: float = Field(
        gt=0,
        le=600_000,
        description="P99 of request latency (arrival to response, queueing included) to stay under, in ms.",
    )
    target_qps: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Load (requests per second) the service promises to absorb within the P99 target. The operator "
            "keeps at least enough replicas for it; when even replicas.max cannot serve it, the "
            "ScalingLimited condition says so. Unset: scale on observed load only."
        ),
    )


class ReplicaBounds(_ApiModel):
    """Bounds on the number of model server replicas (GPUs are paid per replica)."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [cel("self.min <= self.max", "replicas.min must be <= replicas.max")]
        }
    )

    min: int = Field(default=1, ge=0, le=10_000, description="Fewest replicas, even with no traffic.")
    max: int = Field(default=10, ge=1, le=10_000, description="Most replicas, whatever the load.")


class BatchingSpec(_ApiModel):
    """Bounds on the model server's dynamic batching, the operator's second knob."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel(
                    "self.minBatchSize <= self.maxBatchSize",
                    "batching.minBatchSize must be <= batching.maxBatchSize",
                )
            ]
        }
    )

    min_batch_size: int = Field(
        default=1, ge=1, le=4096, description="Smallest MAX_BATCH_SIZE the operator may choose."
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Largest MAX_BATCH_SIZE the operator may choose (bounded by the model's memory).",
    )
    max_batch_delay_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="The server's MAX_BATCH_DELAY_MS: the longest a request waits for its batch to fill, ms.",
    )


class ScalingSpec(_ApiModel):
    """How, and how often, the operator acts."""

    mode: ScalingMode = Field(
        default=ScalingMode.AUTO,
        description="Auto: decide and apply. DryRun: decide and report, change nothing. Off: do nothing.",
    )
    interval_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Seconds between two control steps. Unset: the operator's DEFAULT_INTERVAL_SECONDS.",
    )
    headroom: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="Capacity kept above demand, as a fraction of demand (0.2 = 20 %).",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Scale down only to the highest recommendation seen within this many seconds.",
    )
    max_scale_down_step: int = Field(
        default=1, ge=1, le=10_000, description="At most this many replicas removed per control step."
    )
    batch_change_min_interval_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description=(
            "A batch-size change rolls every pod: no more often than this, unless the SLO is violated."
        ),
    )
    startup_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long a new replica takes to serve: the lead time for scaling ahead of rising load.",
    )
    min_requests_for_p99: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="A P99 computed from fewer requests in the window is not taken as evidence.",
    )
    slo_margin: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Plan for a predicted P99 of at most this fraction of the target.",
    )


class EnvVar(_ApiModel):
    """A plain environment variable for the model server container."""

    name: str = Field(min_length=1, max_length=253, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class ModelSpec(_ApiModel):
    """The bundled model server the operator deploys and owns (a Deployment and a Service)."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel(
                    "!(has(self.bundledModel) && has(self.modelPath))",
                    "set at most one of model.bundledModel and model.modelPath",
                ),
                cel(
                    "!has(self.env) || self.env.all(e, e.name != 'MAX_BATCH_SIZE')",
                    "model.env must not set MAX_BATCH_SIZE: the operator owns it",
                    field_path=".env",
                ),
            ]
        }
    )

    image: str = Field(min_length=1, description="Container image of the model server.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None,
        description="Image pull policy of the model server container.",
    )
    bundled_model: str | None = Field(
        default=None, min_length=1, description="Name of a model bundled in the image (the server's MODEL)."
    )
    model_path: str | None = Field(
        default=None,
        min_length=1,
        description="Path of a TorchScript or torch.export file to serve instead (the server's MODEL_PATH).",
    )
    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="Name served in the inference paths and in the model metric label (MODEL_NAME).",
    )
    port: int = Field(
        default=8080, ge=1, le=65535, description="HTTP port of the inference and metrics endpoints."
    )
    gpus_per_replica: int = Field(
        default=0, ge=0, le=16, description="nvidia.com/gpu requested and limited per replica (0: CPU only)."
    )
    cpu: str | None = Field(default=None, description="CPU request per replica, as a quantity (e.g. '2').")
    memory: str | None = Field(
        default=None, description="Memory request and limit per replica, as a quantity (e.g. '4Gi')."
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables for the model server container."
    )
    termination_grace_period_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Time a pod is given to drain its queue after it is told to stop.",
    )
    pre_stop_seconds: int = Field(
        default=5,
        ge=0,
        le=600,
        description="Pause before the server gets SIGTERM, so endpoints stop routing to a pod being removed.",
    )


class ScaleTargetRef(_ApiModel):
    """An existing Deployment to autoscale instead of a bundled server; its pods export the same metrics."""

    api_version: Literal["apps/v1"] = Field(default="apps/v1", description="API version of the target.")
    kind: Literal["Deployment"] = Field(default="Deployment", description="Kind of the target.")
    name: str = Field(min_length=1, max_length=253, description="Name of the Deployment, in this namespace.")
    container_name: str | None = Field(
        default=None,
        min_length=1,
        description="Container whose MAX_BATCH_SIZE env is set. Unset: the Deployment's first container.",
    )


class PrometheusSpec(_ApiModel):
    """Per-service overrides of how the operator finds this service's series in Prometheus."""

    service_name: str | None = Field(
        default=None,
        min_length=1,
        description="Value of the inferenceservice label to match. Unset: this object's name.",
    )
    selector: dict[str, str] = Field(
        default_factory=dict,
        description="Extra label matchers (label: value) added to every query, e.g. {job: my-scrape-job}.",
    )
    window_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="Window of rate() and histogram_quantile() in seconds.",
    )


class InferenceServiceSpec(_ApiModel):
    """What the service promises (the SLO) and the bounds within which the operator may act."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL_RULES_KEY: [
                cel(
                    "has(self.model) != has(self.scaleTargetRef)",
                    "set exactly one of model (a bundled server) and scaleTargetRef (an existing Deployment)",
                ),
                cel(
                    "self.batching.maxBatchDelayMs < self.slo.p99LatencyMs",
                    "batching.maxBatchDelayMs must be below slo.p99LatencyMs: the batch delay alone "
                    "would spend the whole latency budget",
                    field_path=".batching.maxBatchDelayMs",
                ),
            ]
        }
    )

    slo: SLOSpec = Field(description="The latency objective and the load it must hold at.")
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds, description="Bounds on replicas.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Bounds on the batch size.")
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec, description="Mode and pace of the control loop."
    )
    model: ModelSpec | None = Field(
        default=None, description="A bundled model server for the operator to deploy (or use scaleTargetRef)."
    )
    scale_target_ref: ScaleTargetRef | None = Field(
        default=None, description="An existing Deployment to autoscale (or use model)."
    )
    prometheus: PrometheusSpec = Field(
        default_factory=PrometheusSpec, description="How to find this service's series in Prometheus."
    )


# ----------------------------------------------------------------------------------------- status


class ConditionType(enum.StrEnum):
    READY = "Ready"
    METRICS_AVAILABLE = "MetricsAvailable"
    SLO_MET = "SLOMet"
    SCALING_LIMITED = "ScalingLimited"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason:
    """Fixed condition and event reasons (CamelCase, as Kubernetes conventions ask): alert on these."""

    # Ready
    REPLICAS_READY: Final = "ReplicasReady"
    REPLICAS_NOT_READY: Final = "ReplicasNotReady"
    TARGET_NOT_FOUND: Final = "TargetNotFound"
    SCALING_OFF: Final = "ScalingOff"
    # MetricsAvailable
    METRICS_READ: Final = "MetricsRead"
    NO_TRAFFIC: Final = "NoTraffic"
    NO_SERIES: Final = "NoSeries"
    PROMETHEUS_ERROR: Final = "PrometheusError"
    # SLOMet
    WITHIN_TARGET: Final = "WithinTarget"
    TARGET_EXCEEDED: Final = "TargetExceeded"
    INSUFFICIENT_DATA: Final = "InsufficientData"
    # ScalingLimited (True reasons are also the policy's Limit values, e.g. MaxReplicas)
    WITHIN_BOUNDS: Final = "WithinBounds"
    TARGET_QPS_UNREACHABLE: Final = "TargetQpsUnreachable"
    # Events
    SCALED: Final = "Scaled"
    BATCH_SIZE_CHANGED: Final = "BatchSizeChanged"
    DRY_RUN_DECISION: Final = "DryRunDecision"
    METRICS_UNAVAILABLE: Final = "MetricsUnavailable"
    METRICS_RECOVERED: Final = "MetricsRecovered"
    ACTUATION_FAILED: Final = "ActuationFailed"
    INVALID_SPEC: Final = "InvalidSpec"


class Condition(_ApiModel):
    """A condition per Kubernetes API conventions."""

    type: ConditionType = Field(description="Ready, MetricsAvailable, SLOMet or ScalingLimited.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word, fixed per situation: fit for alerts.")
    message: str = Field(default="", description="What happened, for people.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the status last changed (unchanged conditions keep their time).",
    )
    observed_generation: int | None = Field(default=None, description="Spec generation it was computed for.")


class ObservedMetrics(_ApiModel):
    """What Prometheus said at the last control step."""

    p99_latency_ms: float | None = Field(default=None, description="Observed P99 latency in ms.")
    qps: float | None = Field(
        default=None, description="Observed requests per second, all replicas together."
    )
    request_count: float | None = Field(default=None, description="Requests answered within the window.")
    window_seconds: int | None = Field(default=None, description="Window the figures were computed over.")
    time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When read."
    )


class LastDecision(_ApiModel):
    """The policy's most recent decision, applied or not (DryRun)."""

    time: str = Field(json_schema_extra={"format": "date-time"}, description="When it was taken.")
    replicas: int = Field(description="Replicas chosen.")
    max_batch_size: int = Field(description="MAX_BATCH_SIZE chosen.")
    reason: str = Field(description="Why, in one sentence.")
    predicted_p99_latency_ms: float | None = Field(
        default=None, description="Predicted P99 at the choice, ms."
    )
    capacity_qps: float | None = Field(default=None, description="Load the choice serves within the target.")
    demand_qps: float | None = Field(default=None, description="Load the choice was sized for.")
    limited_by: str | None = Field(default=None, description="Bound that held the decision back, if any.")
    applied: bool = Field(default=False, description="False in DryRun or when nothing needed to change.")


class RecommendationRecord(_ApiModel):
    """One past recommendation, kept for scale-down stabilisation across operator restarts."""

    time: str = Field(json_schema_extra={"format": "date-time"}, description="When.")
    replicas: int = Field(description="Replicas recommended.")
    max_batch_size: int = Field(description="MAX_BATCH_SIZE recommended.")


class DemandSample(_ApiModel):
    """One observed load, kept for the rising-edge trend."""

    time: str = Field(json_schema_extra={"format": "date-time"}, description="When.")
    qps: float = Field(description="Observed requests per second.")


class HistoryStatus(_ApiModel):
    """The controller's memory, persisted so a restarted operator resumes without a burst of scaling."""

    recommendations: list[RecommendationRecord] = Field(
        default_factory=list, description="Recent recommendations within the stabilisation window."
    )
    last_scale_up_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="Last scale up."
    )
    last_scale_down_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="Last scale down."
    )
    last_batch_change_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="Last batch-size change."
    )
    demand_samples: list[DemandSample] = Field(
        default_factory=list, description="Recent observed loads, for the rising-edge trend."
    )
    latency_correction: float = Field(
        default=1.0, description="Smoothed observed / predicted P99 that scales the model's predictions."
    )


class InferenceServiceStatus(_ApiModel):
    """What the operator observed and did. Written only by the operator."""

    model_config = ConfigDict(extra="ignore")  # kopf keeps its own bookkeeping next to ours

    observed_generation: int | None = Field(default=None, description="Spec generation last acted on.")
    replicas: int | None = Field(default=None, description="Replicas the Deployment asks for now.")
    ready_replicas: int | None = Field(default=None, description="Replicas passing their readiness probe.")
    desired_replicas: int | None = Field(default=None, description="Replicas the policy chose last.")
    max_batch_size: int | None = Field(default=None, description="MAX_BATCH_SIZE the replicas run with.")
    observed: ObservedMetrics | None = Field(default=None, description="Metrics seen at the last step.")
    last_scale_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="Last change of either knob."
    )
    last_decision: LastDecision | None = Field(default=None, description="The policy's last decision.")
    history: HistoryStatus | None = Field(default=None, description="Controller memory (internal).")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, MetricsAvailable, SLOMet, ScalingLimited."
    )


# ------------------------------------------------------------------------------------ the object


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(min_length=1, max_length=63)]
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None


class InferenceService(_ApiModel):
    """An inference service held under a P99 latency target at the fewest replicas."""

    api_version: Literal["slo-autoscaler.io/v1alpha1"] = "slo-autoscaler.io/v1alpha1"
    kind: Literal["InferenceService"] = KIND
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None

    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Mode", "type": "string", "jsonPath": ".spec.scaling.mode"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Batch", "type": "integer", "jsonPath": ".status.maxBatchSize"},
        {"name": "P99", "type": "number", "jsonPath": ".status.observed.p99LatencyMs", "description": "ms"},
        {"name": "Target", "type": "number", "jsonPath": ".spec.slo.p99LatencyMs", "description": "ms"},
        {"name": "QPS", "type": "number", "jsonPath": ".status.observed.qps"},
        {"name": "SLO met", "type": "string", "jsonPath": '.status.conditions[?(@.type=="SLOMet")].status'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
