"""The e2e scenario as data: pinned versions, manifests, and what the tests derive from them.

Pure (files and YAML only, no cluster), so that the Docker-free checks in ``tests/e2e_static/``
read exactly what ``up.sh`` and ``test_loop.py`` use: the same InferenceService variants, the
same load Job arguments, the same chart values.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
VERSIONS_FILE = E2E_DIR / "versions.env"
KIND_CONFIG = E2E_DIR / "kind-config.yaml"
PROMETHEUS_MANIFEST = E2E_DIR / "prometheus.yaml"
INFERENCESERVICE_MANIFEST = E2E_DIR / "inferenceservice.yaml"
LOAD_JOB_MANIFEST = E2E_DIR / "load-job.yaml"
CHART_VALUES = E2E_DIR / "values-e2e.yaml"
CHART_DIR = REPO_ROOT / "charts" / "slo-autoscaler"
CRD_DIR = REPO_ROOT / "crds"
ARTIFACTS_DIR = REPO_ROOT / "build" / "e2e-artifacts"

CRD_GROUP = "slo-autoscaler.io"
CRD_VERSION = "v1alpha1"
CRD_PLURAL = "inferenceservices"

_ENV_LINE = re.compile(r"^(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>[^\s'\"$`]*)$")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, comments and blank lines allowed; nothing bash would expand or split.

    The same file is sourced by bash, appended to GitHub's $GITHUB_ENV and read here, so only
    the syntax all three agree on is accepted.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ValueError(
                f"{path}:{number}: expected KEY=VALUE with an upper-case key and an unquoted value "
                f"without spaces, got {raw!r}"
            )
        if match["key"] in values:
            raise ValueError(f"{path}:{number}: {match['key']} is set twice")
        values[match["key"]] = match["value"]
    return values


VERSIONS = read_env_file(VERSIONS_FILE)


def setting(key: str) -> str:
    try:
        return VERSIONS[key]
    except KeyError:
        raise KeyError(f"{VERSIONS_FILE} does not set {key}") from None


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a manifest file, each checked to be a mapping."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: document {index} is a {type(doc).__name__}, not a mapping")
    return documents


def load_single(path: Path) -> dict[str, Any]:
    documents = load_documents(path)
    if len(documents) != 1:
        raise ValueError(f"{path}: expected one YAML document, found {len(documents)}")
    return documents[0]


def prometheus_documents() -> list[dict[str, Any]]:
    """prometheus.yaml as up.sh applies it: ``${PROMETHEUS_IMAGE}`` replaced from versions.env."""
    text = PROMETHEUS_MANIFEST.read_text().replace("${PROMETHEUS_IMAGE}", setting("PROMETHEUS_IMAGE"))
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def prometheus_scrape_config() -> dict[str, Any]:
    """The prometheus.yml held by the ConfigMap in prometheus.yaml."""
    [config_map] = [d for d in prometheus_documents() if d["kind"] == "ConfigMap"]
    parsed = yaml.safe_load(config_map["data"]["prometheus.yml"])
    if not isinstance(parsed, dict):
        raise ValueError(f"{PROMETHEUS_MANIFEST}: prometheus.yml is not a mapping")
    return parsed


# --- The scenario --------------------------------------------------------------------------------
# Sized for a 2-4 core CI runner: each model server replica runs the heavier bundled model on one torch
# thread (about 100-300 QPS), so a load one loadgen pod offers comfortably needs more than one replica
# within the P99 target.

AUTO_SERVICE = "e2e-auto"
"""The InferenceService in inferenceservice.yaml (mode Auto), applied by up.sh."""
DRY_RUN_SERVICE = "e2e-dryrun"
DELETE_SERVICE = "e2e-delete"

LOAD_FACTOR = 1.6
"""Peak load as a multiple of one replica's capacity: needs 2 replicas with headroom, fits in 3."""
RAMP_START_FACTOR = 0.5
"""The load ramps up from this multiple of one replica's capacity, so the operator can scale out ahead
of it: a step straight to the peak would overload the one replica while the second one starts, and
the test also asserts that no request failed."""
LOAD_QPS_RANGE = (40.0, 800.0)
"""What one loadgen pod (asyncio, one process) offers reliably on a busy CI runner, lowest to highest."""
LOAD_DURATION_S = 240
"""Long enough for Prometheus' rate window, a few control intervals, a new pod's start and SLOMet."""
DRY_RUN_LOAD_DURATION_S = 120


def replica_capacity_qps(profile_s: dict[int, float], max_batch_size: int) -> float:
    """Requests per second one replica executes at best, from its start-up profile (batch size → seconds).

    Sizing the load from the profile the pod measured in this cluster, rather than from a constant,
    keeps the scenario meaningful on a slow runner and on a fast workstation alike.
    """
    rates = [
        batch / seconds for batch, seconds in profile_s.items() if batch <= max_batch_size and seconds > 0
    ]
    if not rates:
        raise ValueError(
            f"the profile has no batch size <= {max_batch_size} with a positive duration: {profile_s}"
        )
    return max(rates)


def scale_out_load_qps(profile_s: dict[int, float], max_batch_size: int, max_replicas: int) -> float:
    """The load that should make the operator scale out from one replica, within replicas.max."""
    capacity = replica_capacity_qps(profile_s, max_batch_size)
    low, high = LOAD_QPS_RANGE
    rate = max(low, LOAD_FACTOR * capacity)
    if rate > high:
        raise ValueError(
            f"one replica serves {capacity:.0f} QPS here; scaling out would need {rate:.0f} QPS, more than "
            f"one loadgen pod offers reliably ({high:.0f}): use a heavier model or a smaller maxBatchSize "
            f"in {INFERENCESERVICE_MANIFEST.name}"
        )
    if rate > 0.8 * capacity * max_replicas:
        raise ValueError(
            f"{rate:.0f} QPS would need more than replicas.max={max_replicas} replicas of {capacity:.0f} QPS"
        )
    return rate


def inference_service(name: str = AUTO_SERVICE, mode: str = "Auto") -> dict[str, Any]:
    """The manifest from inferenceservice.yaml, renamed and with ``spec.scaling.mode`` set."""
    manifest = copy.deepcopy(load_single(INFERENCESERVICE_MANIFEST))
    manifest["metadata"]["name"] = name
    manifest["metadata"]["namespace"] = setting("E2E_NAMESPACE")
    manifest["spec"].setdefault("scaling", {})["mode"] = mode
    return manifest


def service_url(service: str, namespace: str, port: int) -> str:
    """In-cluster URL of a Service (the one the operator creates for an InferenceService)."""
    return f"http://{service}.{namespace}.svc.cluster.local:{port}"


def served_model_name(manifest: dict[str, Any]) -> str:
    """The name the model server serves under (its MODEL_NAME default: the bundled model's name)."""
    model = manifest["spec"]["model"]
    name = model.get("modelName") or model.get("bundledModel")
    if not name:
        raise ValueError("the e2e InferenceService must set spec.model.modelName or spec.model.bundledModel")
    return str(name)


def load_job(name: str, target: str, start_qps: float, peak_qps: float, duration_s: int) -> dict[str, Any]:
    """The load Job from load-job.yaml, its placeholders filled in.

    load-job.yaml's args carry ``{target}``, ``{model}``, ``{start_qps}``, ``{peak_qps}`` and
    ``{duration_s}`` in the places the load generator's CLI expects them (a linear ramp from start to
    peak over the duration; equal rates make it constant); everything else (summary format,
    timeouts) is literal there.
    """
    manifest = copy.deepcopy(load_single(LOAD_JOB_MANIFEST))
    manifest["metadata"]["name"] = name
    manifest["metadata"]["namespace"] = setting("E2E_NAMESPACE")
    pod_spec = manifest["spec"]["template"]["spec"]
    [container] = pod_spec["containers"]
    container["image"] = setting("MODEL_SERVER_IMAGE")
    values = {
        "target": target,
        "model": served_model_name(inference_service()),
        "start_qps": f"{start_qps:.1f}",
        "peak_qps": f"{peak_qps:.1f}",
        "duration_s": str(duration_s),
    }
    container["args"] = [str(arg).format(**values) for arg in container["args"]]
    return manifest


def load_job_args(manifest: dict[str, Any]) -> list[str]:
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container["args"]]


@dataclass(frozen=True)
class LoadSummary:
    """What the load generator reported at the end of its run (its ``--json`` summary line)."""

    sent: int
    ok: int
    errors: dict[str, int]
    achieved_qps: float
    p99_ms: float
    raw: dict[str, Any]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def parse_load_summary(log: str) -> LoadSummary:
    """The last JSON object line of the Job's log; a clear error when there is none."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return _summary_from(data)
    tail = "\n".join(log.splitlines()[-20:])
    raise ValueError(f"the load generator printed no JSON summary line; the log ends with:\n{tail}")


def _summary_from(data: dict[str, Any]) -> LoadSummary:
    try:
        return LoadSummary(
            sent=int(data["sent"]),
            ok=int(data["ok"]),
            errors={str(kind): int(count) for kind, count in dict(data["errors"]).items()},
            achieved_qps=float(data["achieved_qps"]),
            p99_ms=float(data["p99_ms"]),
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the load generator's summary lacks or garbles {error}: {data}") from error
