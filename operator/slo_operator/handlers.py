"""kopf handlers: settings at startup, owned children on create/resume/update, one control daemon per service.

Everything Kubernetes-shaped and kopf-shaped stays here; the decision path is ``controller``.
Errors: a transient API failure (409, 429, 5xx, connection) raises ``kopf.TemporaryError`` so kopf
retries with backoff; an invalid spec on create/update raises ``kopf.PermanentError``. Prometheus
trouble is not an error at all: the step holds replicas and reports ``MetricsAvailable=False``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
import pydantic
from kubernetes.aio import client as kclient

from slo_operator import api, controller, kube
from slo_operator import metrics as operator_metrics
from slo_operator.prometheus import PrometheusReader
from slo_operator.settings import OperatorConfig

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
GITOPS_TRACKING_LABELS = (
    "app.kubernetes.io/instance",  # Argo CD's default tracking label
    "argocd.argoproj.io/instance",
    "kustomize.toolkit.fluxcd.io/name",
    "kustomize.toolkit.fluxcd.io/namespace",
    "helm.toolkit.fluxcd.io/name",
    "helm.toolkit.fluxcd.io/namespace",
)
"""Labels kopf.adopt would copy from the InferenceService, but which would make Argo CD or Flux
treat our children as theirs (and prune them, since they are not in Git)."""
ANNOTATION_PREFIX = api.GROUP
MAX_BACKOFF_FACTOR = 4


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """All operator-wide settings in one place, as kopf's docs teach."""
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    memo.config = config
    logging.getLogger().setLevel(config.log_level)

    # Peering: with a name, replicas coordinate and only the highest-priority one acts.
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True

    # Events: post only our own (kopf.event) and warnings, not every handler log line.
    settings.posting.level = logging.WARNING
    # kopf's bookkeeping lives in annotations under our prefix, never in spec or our status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    settings.networking.request_timeout = 30

    # Shared clients: one Kubernetes API client, one Prometheus reader for every service.
    if "kube_configuration" not in memo:
        memo.kube_configuration = await kube.load_configuration()
    memo.api_client = kclient.ApiClient(memo.kube_configuration)
    memo.closing = asyncio.Event()  # shared by reference with every object's shallow memo copy
    if "reader" not in memo:
        memo.reader = PrometheusReader(
            config.prometheus_url,
            timeout_s=config.prometheus_timeout_seconds,
            bearer_token_file=config.prometheus_bearer_token_file,
            ca_file=config.prometheus_ca_file,
            tick_seconds=min(config.default_interval_seconds, 15.0),
        )
    operator_metrics.serve(config.metrics_port)
    logger.info(
        "slo-autoscaler starting: Prometheus %s, field manager %s, peering %s",
        config.prometheus_url,
        config.field_manager,
        config.peering_name or "off (standalone)",
    )


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf uses the very credentials of our API client (in-cluster, else kubeconfig)."""
    configuration = memo.kube_configuration
    scheme, token = await kube.bearer_token(configuration)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    """kopf runs this while daemons may still be mid-step: they see ``closing`` and exit quietly."""
    memo.closing.set()
    if "api_client" in memo:
        await memo.api_client.close()
    reader = memo.get("reader")
    if isinstance(reader, PrometheusReader):
        reader.close()


async def _pause(stopped: kopf.DaemonStopped, delay: float) -> None:
    """Sleep up to ``delay``, waking soon after a stop request.

    Polls instead of ``stopped.wait(delay)``: that leaves a timed waiter task behind, which kopf's
    shutdown then collects and re-raises as a TimeoutError.
    """
    deadline = time.monotonic() + delay
    while not stopped and time.monotonic() < deadline:  # noqa: ASYNC110 - see above
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def parse(body: Mapping[str, Any]) -> api.InferenceService:
    """The object as our model; a ValidationError names each bad field."""
    raw = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec", "status") if key in body}
    return api.InferenceService.model_validate(raw)


def _invalid(error: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors(include_url=False)
    )


def _temporary(error: kube.KubeError, delay: float = 5.0) -> kopf.TemporaryError:
    return kopf.TemporaryError(str(error), delay=delay)


def _retry_unless_permanent(error: Exception, delay: float) -> kube.KubeError:
    """Hand an API failure worth retrying to kopf's backoff; return the permanent ones to report.

    An unreachable API or a transient status (409, 429, 5xx) raises ``kopf.TemporaryError``; anything
    that is not an API error is a bug and propagates unchanged.
    """
    if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError):
        raise kopf.TemporaryError(f"Kubernetes API unreachable: {error!r}", delay=delay) from None
    if not isinstance(error, kube.KubeError):
        raise error
    if error.transient:
        raise _temporary(error, delay=delay) from None
    return error


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile_children(
    body: kopf.Body, name: str, namespace: str | None, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """Create or update the bundled server's Deployment and Service (nothing for scaleTargetRef)."""
    assert namespace is not None, "InferenceService is a namespaced resource"
    try:
        service = parse(body)
    except pydantic.ValidationError as error:
        raise kopf.PermanentError(f"invalid InferenceService: {_invalid(error)}") from None
    spec = service.spec
    if spec.model is None:
        return
    config: OperatorConfig = memo.config
    status = service.status or api.InferenceServiceStatus()
    # Only a new Deployment gets the knobs from here; afterwards they belong to the control loop.
    initial_replicas = (
        status.desired_replicas if status.desired_replicas is not None else max(spec.replicas.min, 1)
    )
    initial_batch = status.max_batch_size or spec.batching.max_batch_size
    deployment = kube.build_deployment(
        name, namespace, spec, replicas=initial_replicas, max_batch_size=initial_batch
    )
    server_service = kube.build_service(name, namespace, spec)
    kopf.adopt([deployment, server_service], owner=body)
    for child in (deployment, server_service):
        labels = child["metadata"].get("labels", {})
        for tracking in GITOPS_TRACKING_LABELS:
            if tracking not in kube.pod_labels(name):
                labels.pop(tracking, None)
    try:
        outcome = await kube.ensure_deployment(
            memo.api_client, deployment, field_manager=config.children_field_manager
        )
        await kube.ensure_service(
            memo.api_client, server_service, field_manager=config.children_field_manager
        )
    except kube.KubeError as error:
        if error.transient:
            raise _temporary(error) from None
        raise kopf.PermanentError(str(error)) from None
    logger.info("Deployment %s/%s %s", namespace, name, outcome)


def _actuator(service: api.InferenceService, namespace: str, memo: kopf.Memo) -> kube.KubernetesActuator:
    config: OperatorConfig = memo.config
    ref = service.spec.scale_target_ref
    if ref is not None:
        return kube.KubernetesActuator(
            memo.api_client, namespace, ref.name, config.field_manager, container=ref.container_name
        )
    return kube.KubernetesActuator(
        memo.api_client, namespace, service.metadata.name, config.field_manager, container=kube.CONTAINER_NAME
    )


def _outcome(result: controller.StepResult, mode: api.ScalingMode) -> str:
    if mode == api.ScalingMode.OFF:
        return "off"
    if not result.metrics_ok:
        return "held"
    if result.applied:
        return "applied"
    return "dry_run" if mode == api.ScalingMode.DRY_RUN else "unchanged"


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0)
async def control_loop(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """One control step every ``scaling.intervalSeconds``, for as long as the object exists.

    The status we wrote last is carried in memory (the watch may lag behind our own write); on
    the first step it comes from the object, so a restarted operator resumes from its history.
    """
    assert namespace is not None, "InferenceService is a namespaced resource"
    config: OperatorConfig = memo.config
    last_status: api.InferenceServiceStatus | None = None
    metric_failures = 0
    warned_generation: int | None = None
    while not stopped and not memo.closing.is_set():
        try:
            service = parse(body)
        except pydantic.ValidationError as error:
            generation = body.get("metadata", {}).get("generation")
            if generation != warned_generation:
                kopf.warn(body, reason=api.Reason.INVALID_SPEC, message=_invalid(error))
                warned_generation = generation
            await _pause(stopped, config.default_interval_seconds)
            continue
        if last_status is not None:
            service = service.model_copy(update={"status": last_status})
        interval = float(service.spec.scaling.interval_seconds or config.default_interval_seconds)

        started = time.monotonic()
        try:
            result = await controller.control_step(
                service, memo.reader, _actuator(service, namespace, memo), now=dt.datetime.now(dt.UTC)
            )
        except Exception as error:
            if stopped or memo.closing.is_set():
                return  # the operator is stopping and closed the clients under us: not a failure
            if isinstance(error, kube.KubeError):
                operator_metrics.DECISIONS.labels(namespace, name, "error").inc()
            permanent = _retry_unless_permanent(error, delay=min(interval, 5.0))
            kopf.warn(body, reason=api.Reason.ACTUATION_FAILED, message=str(permanent))
            await _pause(stopped, interval)
            continue
        finally:
            operator_metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

        # Events first: if the status write fails and the step is retried, the Deployment
        # already holds the new values, the retry changes nothing and posts nothing twice.
        for event in result.events:
            if event.reason == api.Reason.TARGET_NOT_FOUND and service.spec.model is not None:
                continue  # our own Deployment: reconcile_children is creating it, or reports why not
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        mode = service.spec.scaling.mode
        operator_metrics.DECISIONS.labels(namespace, name, _outcome(result, mode)).inc()
        if not result.metrics_ok and mode != api.ScalingMode.OFF:
            operator_metrics.PROMETHEUS_ERRORS.labels(namespace, name).inc()

        try:
            await kube.patch_status(
                memo.api_client, namespace, name, result.status.model_dump(by_alias=True, mode="json")
            )
        except Exception as error:
            if stopped or memo.closing.is_set():
                return
            permanent = _retry_unless_permanent(error, delay=min(interval, 5.0))
            logger.warning("status not written: %s", permanent)
        last_status = result.status

        if result.metrics_ok or mode == api.ScalingMode.OFF:
            metric_failures = 0
            delay = interval
        else:
            metric_failures += 1
            delay = interval * min(2 ** (metric_failures - 1), MAX_BACKOFF_FACTOR)
        await _pause(stopped, delay)
