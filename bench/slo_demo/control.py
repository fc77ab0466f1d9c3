"""The operator's control step, driven locally: the same reader, policy and decision path as in a cluster.

In Kubernetes the kopf timer calls ``controller.control_step`` with the object from the API server
and writes the returned status back; here the demo keeps the object in memory and feeds each
step's status (with the policy's history in it) to the next step, exactly as the API server would.
Only the actuator differs: ``LocalActuator`` instead of ``KubernetesActuator``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

from slo_operator.api import InferenceService
from slo_operator.controller import EventRecord, control_step
from slo_operator.local_actuator import LocalActuator
from slo_operator.prometheus import MetricsUnavailable, PrometheusReader


@dataclass(frozen=True)
class StepOutcome:
    """What the demo shows and records of one control step."""

    replicas: int
    max_batch_size: int
    reason: str
    changed: bool
    observed_p99_s: float | None
    observed_qps: float | None
    limited_by: str | None
    events: tuple[EventRecord, ...]


class DemoController:
    def __init__(self, service: InferenceService, prometheus_url: str, actuator: LocalActuator) -> None:
        self._service = service
        self._actuator = actuator
        interval = float(service.spec.scaling.interval_seconds or 2)
        self._reader = PrometheusReader(prometheus_url, timeout_s=2.0, tick_seconds=min(1.0, interval))

    @property
    def service(self) -> InferenceService:
        """The object as the API server would hold it now (status written by the last step)."""
        return self._service

    async def wait_for_profile(self, *, timeout_s: float) -> dict[int, float]:
        """The start-up profile, once Prometheus has scraped the first replica."""
        spec = self._service.spec
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            try:
                # Before the first request there is no request counter series yet, so ``read``
                # says "no series"; the start-up profile gauge is there from the first scrape.
                fleet = await self._reader.fleet(
                    window_s=spec.prometheus.window_seconds,
                    selector=tuple(sorted(spec.prometheus.selector.items())),
                    now=time.time(),
                )
                key = (
                    self._service.metadata.namespace or "default",
                    spec.prometheus.service_name or self._service.metadata.name,
                )
                profile: dict[int, float] = fleet.rows.get(key, {}).get("profile", {})
                if profile:
                    return profile
                last_problem = f"no start-up profile series for {key} yet"
            except MetricsUnavailable as error:
                last_problem = str(error)
            await asyncio.sleep(0.5)
        raise TimeoutError(
            f"Prometheus did not scrape the model server within {timeout_s:.0f} s: {last_problem}"
        )

    async def step(self) -> StepOutcome:
        result = await control_step(
            self._service, self._reader, self._actuator, now=dt.datetime.now(tz=dt.UTC)
        )
        self._service = self._service.model_copy(update={"status": result.status})
        last = result.status.last_decision
        observed = result.status.observed
        p99_ms = observed.p99_latency_ms if observed is not None else None
        return StepOutcome(
            replicas=last.replicas if last is not None else result.status.replicas or 0,
            max_batch_size=last.max_batch_size if last is not None else result.status.max_batch_size or 0,
            reason=last.reason if last is not None else "no decision",
            changed=result.applied,
            observed_p99_s=p99_ms / 1000 if p99_ms is not None else None,
            observed_qps=observed.qps if observed is not None else None,
            limited_by=last.limited_by if last is not None else None,
            events=result.events,
        )

    def close(self) -> None:
        self._reader.close()
