"""The one interface every actuator implements: read the scaled thing's state, set the two knobs.

The Kubernetes actuator (``kube``) patches a Deployment; the local actuator
(``local_actuator``) starts and stops model server processes. The controller only
ever sees this protocol, so the decision path is the same in a cluster and on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ScaleState:
    """What the actuator observes of the thing it scales."""

    replicas: int
    """Replicas asked for (a Deployment's ``spec.replicas``; the local actuator's target)."""
    ready_replicas: int
    """Replicas that pass their readiness probe and take traffic."""
    max_batch_size: int
    """The ``MAX_BATCH_SIZE`` the replicas run with (the newest template's value during a rollout)."""


class Actuator(Protocol):
    async def current(self) -> ScaleState:
        """The state now; raise on failure (the controller holds and retries)."""
        ...

    async def apply(self, *, replicas: int, max_batch_size: int, reason: str) -> None:
        """Set both knobs in one change (one write, one rollout); ``reason`` is for events and logs."""
        ...
