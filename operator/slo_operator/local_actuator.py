"""The local actuator: the ``Actuator`` protocol over model server processes on this machine.

``make demo`` runs the operator's own controller against it instead of a Deployment. It behaves
like one on purpose, so the loop it closes is the loop a cluster closes:

- ``apply`` only records the desired state and returns, like a write to ``spec.replicas``; a
  background reconciler converges to it, and ``current`` reports ``ready_replicas`` as it goes.
- A new replica is ``sys.executable -m model_server`` on its own loopback port (by module name:
  this package never imports ``model_server``), optionally pinned to its own CPU; it joins the
  endpoint set only once ``/v2/health/ready`` answers 200 (a readiness probe).
- A removed replica drains: out of the endpoint set first, a short pause for requests already
  on their way, then SIGTERM (the server answers everything queued and exits 0), then wait.
- A new ``MAX_BATCH_SIZE`` rolls like ``maxUnavailable: 0, maxSurge: 1``: start a new replica,
  wait until it is ready, add it, then drain one old one; repeat. A scale-up and a new batch size
  together start the missing replicas and the surge one at once, as a Deployment would.
- The Prometheus ``file_sd`` target file lists every live replica with the ``namespace`` and
  ``inferenceservice`` labels that Kubernetes service discovery would put there.

Every process it starts runs in its own process group and is killed on ``close`` — also on
cancellation, and by an ``atexit`` hook if the interpreter exits without ``close``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

from slo_contract import env as contract_env
from slo_contract import metrics as contract_metrics
from slo_operator.actuator import ScaleState

log = logging.getLogger(__name__)

READY_PATH = "/v2/health/ready"
MODEL_SERVER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "model_server")
"""Started by module name: the operator and the model server share no imports."""


class EventKind(enum.StrEnum):
    """What happened to a replica; the order of these is what the drain and roll tests check."""

    APPLIED = "applied"
    SPAWNED = "spawned"
    READY = "ready"
    ADDED = "added"
    REMOVED = "removed"
    TERMINATED = "terminated"
    EXITED = "exited"
    FAILED = "failed"


@dataclass(frozen=True)
class ActuatorEvent:
    time_s: float
    """``time.monotonic()`` when it happened."""
    kind: EventKind
    replica: str | None
    detail: str = ""


@dataclass
class Replica:
    """One model server process."""

    name: str
    port: int
    cpu: int | None
    max_batch_size: int
    process: asyncio.subprocess.Process
    log_path: Path
    spawned_s: float
    ready_s: float | None = None
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def startup_s(self) -> float | None:
        """Spawn to ready: the cold start a scale-up has to wait for."""
        return None if self.ready_s is None else self.ready_s - self.spawned_s


class ReplicaStartError(RuntimeError):
    """A model server process exited or never became ready."""


@dataclass(frozen=True)
class LocalServiceConfig:
    """What the local actuator needs to know about the service it runs."""

    namespace: str
    name: str
    model_name: str
    server_env: Mapping[str, str] = field(default_factory=dict)
    """Environment for every replica (``MODEL``, ``MAX_BATCH_DELAY_MS``, ...); the actuator sets
    ``PORT``, ``MAX_BATCH_SIZE`` and ``MODEL_NAME`` itself."""
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    """Replica logs go here."""
    file_sd_path: Path | None = None
    """Prometheus ``file_sd_configs`` target file kept in sync with the live replicas."""
    cpus: Sequence[int] | None = None
    """CPUs to pin replicas to, least used first; None leaves placement to the kernel."""
    ready_timeout_s: float = 120.0
    drain_pause_s: float = 0.5
    """Between leaving the endpoint set and SIGTERM: requests already sent still arrive."""
    drain_timeout_s: float = 30.0
    command: Sequence[str] = MODEL_SERVER_COMMAND
    max_start_failures: int = 3
    """Consecutive failed starts after which ``current`` raises instead of retrying for ever."""


# --- last-resort cleanup -------------------------------------------------------------------
_LIVE_PROCESS_GROUPS: set[int] = set()


def _kill_live_process_groups() -> None:
    """``atexit``: whatever ``close`` did not get to dies with the interpreter."""
    for pgid in list(_LIVE_PROCESS_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_PROCESS_GROUPS.discard(pgid)


atexit.register(_kill_live_process_groups)


def free_port() -> int:
    """A loopback port the OS says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class LocalActuator:
    """Model server processes behind the ``Actuator`` protocol (see the module docstring)."""

    def __init__(
        self,
        config: LocalServiceConfig,
        *,
        on_event: Callable[[ActuatorEvent], None] | None = None,
    ) -> None:
        self._config = config
        self._on_event = on_event
        self._serving: list[Replica] = []
        self._draining: list[Replica] = []
        self._starting: list[Replica] = []
        self._all: list[Replica] = []
        self._desired: tuple[int, int] | None = None
        self._next_index = 0
        self._wake = asyncio.Event()
        self._converged = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        self._start_failures = 0
        self._last_error: str | None = None
        self._closed = False
        self._http: aiohttp.ClientSession | None = None
        self.events: list[ActuatorEvent] = []
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self._write_file_sd()

    # --- the Actuator protocol -------------------------------------------------------------
    async def current(self) -> ScaleState:
        if self._closed:
            raise RuntimeError("the local actuator is closed")
        if self._start_failures >= self._config.max_start_failures:
            raise ReplicaStartError(f"{self._start_failures} replica starts failed: {self._last_error}")
        if self._reconciler is not None and self._reconciler.done() and not self._reconciler.cancelled():
            failure = self._reconciler.exception()
            raise RuntimeError(f"the local actuator's reconciler stopped: {failure!r}") from failure
        desired_replicas, desired_batch = self._desired or (0, 0)
        return ScaleState(
            replicas=desired_replicas,
            ready_replicas=len(self._serving),
            max_batch_size=desired_batch,
        )

    async def apply(self, *, replicas: int, max_batch_size: int, reason: str) -> None:
        if self._closed:
            raise RuntimeError("the local actuator is closed")
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._desired = (replicas, max_batch_size)
        self._start_failures = 0
        detail = f"replicas={replicas} max_batch_size={max_batch_size}: {reason}"
        self._record(EventKind.APPLIED, None, detail)
        self._converged.clear()
        self._wake.set()
        if self._reconciler is None:
            self._reconciler = asyncio.create_task(self._reconcile_forever(), name="local-actuator")

    # --- what the demo reads ---------------------------------------------------------------
    def endpoints(self) -> tuple[str, ...]:
        """Base URLs of the ready replicas: the load balancer's endpoint set, read at every send."""
        return tuple(replica.url for replica in self._serving)

    @property
    def desired(self) -> tuple[int, int] | None:
        """``(replicas, max_batch_size)`` of the last ``apply``; None before the first."""
        return self._desired

    @property
    def replicas(self) -> tuple[Replica, ...]:
        """Every replica started so far, in start order (exited ones included)."""
        return tuple(self._all)

    def live_pids(self) -> tuple[int, ...]:
        return tuple(r.process.pid for r in self._all if r.process.returncode is None)

    async def wait_converged(self, timeout_s: float) -> None:
        """Until the replicas match the last ``apply`` (TimeoutError otherwise)."""
        await asyncio.wait_for(self._converged.wait(), timeout_s)

    async def __aenter__(self) -> LocalActuator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Drain every replica (SIGTERM, wait), kill what does not exit; idempotent, cancel-safe."""
        if self._closed:
            return
        self._closed = True
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconciler
        try:
            live = [r for r in self._all if r.process.returncode is None]
            self._serving.clear()
            for replica in live:
                self._terminate(replica)
            if live:
                await asyncio.wait(
                    [asyncio.create_task(r.process.wait()) for r in live],
                    timeout=self._config.drain_timeout_s,
                )
        finally:
            for replica in self._all:
                self._kill(replica)
                if replica.process.returncode is None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(replica.process.wait(), 5.0)
                self._forget(replica)
            self._draining.clear()
            self._starting.clear()
            self._write_file_sd()
            if self._http is not None:
                await self._http.close()

    # --- reconciliation --------------------------------------------------------------------
    async def _reconcile_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._matches_desired():
                if self._start_failures >= self._config.max_start_failures:
                    break
                try:
                    await self._step()
                except ReplicaStartError as error:
                    self._start_failures += 1
                    self._last_error = str(error)
                    self._record(EventKind.FAILED, None, str(error))
                    log.warning("replica start failed (%d): %s", self._start_failures, error)
                    await asyncio.sleep(1.0)
            if self._matches_desired():
                self._converged.set()

    def _matches_desired(self) -> bool:
        if self._desired is None:
            return True
        replicas, batch = self._desired
        return len(self._serving) == replicas and all(r.max_batch_size == batch for r in self._serving)

    async def _step(self) -> None:
        """One move towards the desired state, in the order a Deployment (maxSurge 1,
        maxUnavailable 0) makes it: never more than ``replicas + 1`` processes, never fewer ready
        replicas than asked for while old ones are replaced, old ones drained only once new ones serve.
        """
        assert self._desired is not None
        replicas, batch = self._desired
        outdated = [r for r in self._serving if r.max_batch_size != batch]
        if len(self._serving) > replicas:
            await self._drain((outdated or self._serving)[-1])
            return
        up_to_date_missing = replicas - (len(self._serving) - len(outdated))
        surge = 1 if outdated else 0
        to_start = min(replicas - len(self._serving) + surge, up_to_date_missing)
        if to_start <= 0:
            return
        started = await asyncio.gather(
            *(self._start_replica(batch) for _ in range(to_start)), return_exceptions=True
        )
        failures = [s for s in started if isinstance(s, BaseException)]
        if failures:
            raise ReplicaStartError("; ".join(str(f) for f in failures))

    async def _start_replica(self, max_batch_size: int) -> Replica:
        config = self._config
        self._next_index += 1
        name = f"{config.name}-{self._next_index}"
        port = free_port()
        cpu = self._least_used_cpu()
        log_path = config.work_dir / f"{name}.log"
        server_env = {
            **os.environ,
            **config.server_env,
            contract_env.PORT: str(port),
            contract_env.MAX_BATCH_SIZE: str(max_batch_size),
            contract_env.MODEL_NAME: config.model_name,
        }
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *config.command,
                env=server_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE_PROCESS_GROUPS.add(process.pid)
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(process.pid, {cpu})
        replica = Replica(name, port, cpu, max_batch_size, process, log_path, time.monotonic())
        self._all.append(replica)
        self._starting.append(replica)
        self._record(EventKind.SPAWNED, name, f"port={port} cpu={cpu} max_batch_size={max_batch_size}")
        try:
            await self._wait_ready(replica)
        except BaseException:
            self._starting.remove(replica)
            self._kill(replica)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 5.0)
            self._forget(replica)
            raise
        self._starting.remove(replica)
        replica.ready_s = time.monotonic()
        self._record(EventKind.READY, name, f"started in {replica.startup_s:.1f} s")
        self._serving.append(replica)
        self._write_file_sd()
        self._record(EventKind.ADDED, name, replica.url)
        return replica

    async def _wait_ready(self, replica: Replica) -> None:
        """Poll the readiness endpoint, as a kubelet would."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        deadline = time.monotonic() + self._config.ready_timeout_s
        while time.monotonic() < deadline:
            if replica.process.returncode is not None:
                raise ReplicaStartError(
                    f"{replica.name} exited with {replica.process.returncode} before it was ready: "
                    f"{_tail(replica.log_path)}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http.get(replica.url + READY_PATH) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise ReplicaStartError(
            f"{replica.name} not ready after {self._config.ready_timeout_s:.0f} s: {_tail(replica.log_path)}"
        )

    async def _drain(self, replica: Replica) -> None:
        self._serving.remove(replica)
        self._draining.append(replica)
        self._record(EventKind.REMOVED, replica.name, replica.url)
        await asyncio.sleep(self._config.drain_pause_s)
        self._terminate(replica)
        try:
            code = await asyncio.wait_for(replica.process.wait(), self._config.drain_timeout_s)
        except TimeoutError:
            self._kill(replica)
            code = await replica.process.wait()
            self._record(EventKind.FAILED, replica.name, "did not drain in time: killed")
        replica.exit_code = code
        self._record(EventKind.EXITED, replica.name, f"exit code {code}")
        self._draining.remove(replica)
        self._forget(replica)
        self._write_file_sd()

    # --- processes -------------------------------------------------------------------------
    def _terminate(self, replica: Replica) -> None:
        if replica.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                replica.process.send_signal(signal.SIGTERM)
            self._record(EventKind.TERMINATED, replica.name, "SIGTERM")

    def _kill(self, replica: Replica) -> None:
        """SIGKILL the replica's whole process group (anything it forked goes too)."""
        if replica.process.pid in _LIVE_PROCESS_GROUPS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(replica.process.pid, signal.SIGKILL)

    def _forget(self, replica: Replica) -> None:
        if replica.process.returncode is not None:
            if replica.exit_code is None:
                replica.exit_code = replica.process.returncode
            _LIVE_PROCESS_GROUPS.discard(replica.process.pid)

    def _least_used_cpu(self) -> int | None:
        cpus = self._config.cpus
        if not cpus:
            return None
        live = self._serving + self._starting + self._draining
        return min(cpus, key=lambda cpu: sum(1 for r in live if r.cpu == cpu))

    def _write_file_sd(self) -> None:
        """Atomically rewrite the target file (Prometheus notices the rename at once)."""
        path = self._config.file_sd_path
        if path is None:
            return
        groups = [
            {
                "targets": [f"127.0.0.1:{r.port}"],
                "labels": {
                    contract_metrics.NAMESPACE_LABEL: self._config.namespace,
                    contract_metrics.INFERENCESERVICE_LABEL: self._config.name,
                    contract_metrics.POD_LABEL: r.name,
                },
            }
            for r in self._serving + self._draining
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(groups, indent=1))
        os.replace(temporary, path)

    def _record(self, kind: EventKind, replica: str | None, detail: str) -> None:
        event = ActuatorEvent(time.monotonic(), kind, replica, detail)
        self.events.append(event)
        log.info("%s %s %s", kind.value, replica or "", detail)
        if self._on_event is not None:
            self._on_event(event)
