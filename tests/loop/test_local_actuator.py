"""The local actuator with real model server processes (``python -m model_server``, the light preset).

What a Deployment promises is checked on the actuator's own event log and from outside: a new
replica joins the endpoint set only once ready; a removed one leaves the endpoint set before it
gets SIGTERM and exits 0 after answering its queue; a batch-size change starts the new replica
and has it ready before the old one is removed; steady load through all of it loses nothing;
``close`` leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from model_server.loadgen import fetch_request_body, run_load, traces
from slo_contract import env, metrics
from slo_operator.actuator import ScaleState
from slo_operator.local_actuator import ActuatorEvent, EventKind, LocalActuator, LocalServiceConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MODEL_NAME = "ranking"


def _config(tmp_path: Path, **overrides: object) -> LocalServiceConfig:
    settings: dict[str, object] = {
        "namespace": "ns1",
        "name": "svc",
        "model_name": MODEL_NAME,
        "server_env": {
            env.MODEL: "ranking",
            env.TORCH_NUM_THREADS: "1",
            env.MAX_BATCH_DELAY_MS: "2",
            env.PROFILE_MAX_BATCH_SIZE: "4",
        },
        "work_dir": tmp_path / "logs",
        "file_sd_path": tmp_path / "targets.json",
        "drain_pause_s": 0.3,
        "ready_timeout_s": 90.0,
    }
    settings.update(overrides)
    return LocalServiceConfig(**settings)  # type: ignore[arg-type]


def _index(events: list[ActuatorEvent], kind: EventKind, replica: str) -> int:
    return next(i for i, e in enumerate(events) if e.kind is kind and e.replica == replica)


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _max_batch_gauge(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        text = await response.text()
    line = next(x for x in text.splitlines() if x.startswith(metrics.MAX_BATCH_SIZE + "{"))
    return float(line.rsplit(" ", 1)[1])


async def _steady_load(
    actuator: LocalActuator, seconds: float, qps: float = 40.0
) -> tuple[int, dict[str, int]]:
    body = await fetch_request_body(actuator.endpoints()[0], MODEL_NAME)
    arrivals = traces.arrival_times(traces.constant(qps, seconds), seed=3)
    summary = await run_load(actuator.endpoints, MODEL_NAME, body, arrivals, timeout_s=30.0)
    return summary.ok, summary.errors


async def test_scale_up_and_down_drains_in_order_under_load(tmp_path: Path) -> None:
    async with LocalActuator(_config(tmp_path)) as actuator:
        await actuator.apply(replicas=1, max_batch_size=2, reason="start")
        await actuator.wait_converged(120)
        assert await actuator.current() == ScaleState(replicas=1, ready_replicas=1, max_batch_size=2)
        [first] = actuator.replicas
        targets = json.loads((tmp_path / "targets.json").read_text())
        assert targets == [
            {
                "targets": [f"127.0.0.1:{first.port}"],
                "labels": {
                    metrics.NAMESPACE_LABEL: "ns1",
                    metrics.INFERENCESERVICE_LABEL: "svc",
                    metrics.POD_LABEL: first.name,
                },
            }
        ]

        async def scale_up_then_down() -> None:
            await asyncio.sleep(1.0)
            await actuator.apply(replicas=2, max_batch_size=2, reason="up")
            assert (await actuator.current()).ready_replicas == 1  # apply returns before the rollout
            await actuator.wait_converged(120)
            assert len(actuator.endpoints()) == 2
            await asyncio.sleep(1.0)
            await actuator.apply(replicas=1, max_batch_size=2, reason="down")
            await actuator.wait_converged(60)

        load = asyncio.create_task(_steady_load(actuator, seconds=14.0))
        await scale_up_then_down()
        ok, errors = await load
        assert errors == {}, f"requests failed during scaling: {errors}"
        assert ok > 300

        events = actuator.events
        second = actuator.replicas[1]
        # Joined only once ready.
        assert _index(events, EventKind.READY, second.name) < _index(events, EventKind.ADDED, second.name)
        # The newest replica was removed: out of the endpoint set before SIGTERM, then a clean exit.
        removed = [e.replica for e in events if e.kind is EventKind.REMOVED]
        assert removed == [second.name]
        assert (
            _index(events, EventKind.REMOVED, second.name)
            < _index(events, EventKind.TERMINATED, second.name)
            < _index(events, EventKind.EXITED, second.name)
        )
        terminated_at = events[_index(events, EventKind.TERMINATED, second.name)].time_s
        removed_at = events[_index(events, EventKind.REMOVED, second.name)].time_s
        assert terminated_at - removed_at >= 0.3  # the preStop-like pause
        assert second.exit_code == 0
        assert actuator.endpoints() == (first.url,)
        assert [group["targets"] for group in json.loads((tmp_path / "targets.json").read_text())] == [
            [f"127.0.0.1:{first.port}"]
        ]
        pids = [r.process.pid for r in actuator.replicas]
    assert all(_group_gone(pid) for pid in pids)
    assert json.loads((tmp_path / "targets.json").read_text()) == []


async def test_batch_size_change_rolls_new_before_old_under_load(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    async with LocalActuator(_config(tmp_path, cpus=cpus if len(cpus) == 2 else None)) as actuator:
        await actuator.apply(replicas=1, max_batch_size=2, reason="start")
        await actuator.wait_converged(120)
        [old] = actuator.replicas
        assert await _max_batch_gauge(old.url) == 2

        async def roll() -> None:
            await asyncio.sleep(1.0)
            await actuator.apply(replicas=1, max_batch_size=4, reason="bigger batches")
            assert (await actuator.current()).max_batch_size == 4  # the new template, as a Deployment says
            await actuator.wait_converged(120)

        load = asyncio.create_task(_steady_load(actuator, seconds=10.0))
        await roll()
        ok, errors = await load
        assert errors == {}, f"requests failed during the roll: {errors}"
        assert ok > 200

        new = actuator.replicas[1]
        assert new.max_batch_size == 4
        assert actuator.endpoints() == (new.url,)
        assert await _max_batch_gauge(new.url) == 4
        events = actuator.events
        # maxUnavailable 0: the new replica is ready and serving before the old one leaves.
        assert _index(events, EventKind.ADDED, new.name) < _index(events, EventKind.REMOVED, old.name)
        assert _index(events, EventKind.REMOVED, old.name) < _index(events, EventKind.TERMINATED, old.name)
        assert old.exit_code == 0
        if old.cpu is not None:
            assert new.cpu != old.cpu  # the surge replica goes to the less used core
            assert os.sched_getaffinity(new.process.pid) == {new.cpu}


async def test_close_kills_a_replica_that_ignores_sigterm_and_start_failures_are_reported(
    tmp_path: Path,
) -> None:
    """The first replica is a stand-in that ignores SIGTERM (a real server never does: this is the
    only way to exercise the kill path); the second command exits at once, like a bad config."""
    stubborn = (
        "import signal, time, http.server, os\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
    )
    config = _config(tmp_path, command=(sys.executable, "-c", stubborn), drain_timeout_s=1.0)
    actuator = LocalActuator(config)
    try:
        await actuator.apply(replicas=1, max_batch_size=1, reason="start")
        await actuator.wait_converged(30)
        [replica] = actuator.replicas
    finally:
        await actuator.close()
    assert _group_gone(replica.process.pid)
    assert replica.exit_code == -signal.SIGKILL

    failing = _config(
        tmp_path, command=(sys.executable, "-c", "raise SystemExit(2)"), max_start_failures=2, name="bad"
    )
    async with LocalActuator(failing) as actuator:
        await actuator.apply(replicas=1, max_batch_size=1, reason="start")
        with pytest.raises(TimeoutError):
            await actuator.wait_converged(8)
        with pytest.raises(RuntimeError, match="exited with 2 before it was ready"):
            await actuator.current()
        with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
            await actuator.apply(replicas=1, max_batch_size=0, reason="bad")
