"""``python -m model_server`` / ``slo-model-server``: config, load, profile, serve, drain on SIGTERM.

Start-up refuses bad settings with one line on stderr and exit code 2. SIGTERM (a scale-down) turns
readiness false at once, answers 503 to new requests, answers every queued and running one, exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from model_server.config import ConfigError, ServerConfig, load_config

if TYPE_CHECKING:
    from model_server.metrics import ServerMetrics
    from model_server.model import ServedModel

log = logging.getLogger("model_server")

GIL_SWITCH_INTERVAL_S = 0.0005
"""The event loop and the model's worker thread share the GIL; Python's default 5 ms switch interval
makes the model wait up to 5 ms each time it takes the GIL back from a busy loop (measured: a batch
of 16 from 13 ms alone to 36 ms at 0.5 ms, 290 ms at 5 ms, with a loop thread spinning)."""

DRAIN_LINGER_S = 0.2
"""After the last answer, keep refusing (503) briefly so requests already on the wire are not reset."""


def load(config: ServerConfig) -> ServedModel:
    import torch

    from model_server.model import bundled_model, load_model_file, resolve_device

    torch.set_num_threads(config.torch_num_threads)
    device = resolve_device(config.device)
    if config.model_path is not None:
        return load_model_file(config.model_path, device)
    return bundled_model(config.model, device)


async def serve(config: ServerConfig, model: ServedModel, host: str = "0.0.0.0") -> dict[str, float]:
    """Serve until SIGTERM or SIGINT, then drain; returns the answered request counts by code."""
    from aiohttp import web

    from model_server.dataplane import DataPlane
    from model_server.metrics import ServerMetrics
    from model_server.profile import profile_model
    from model_server.rest import IN_FLIGHT, create_app

    metrics = ServerMetrics(config.model_name, config.max_batch_size)
    started = time.perf_counter()
    profile = profile_model(model, config.profile_max_batch_size)
    metrics.set_profile(profile)
    log.info(
        "profile (ms per execution by batch size): %s [%.1f s]",
        " ".join(f"{b}:{s * 1000:.2f}" for b, s in profile.items()),
        time.perf_counter() - started,
    )
    plane = DataPlane(
        model,
        config.model_name,
        config.max_batch_size,
        config.max_batch_delay_ms,
        config.max_queue_size,
        metrics,
    )
    app = create_app(plane)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, config.port, reuse_address=True)
    await site.start()
    plane.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("serving model %s on http://%s:%d", config.model_name, host, config.port)
    await stop.wait()
    log.info("draining: readiness false, refusing new requests")
    await plane.drain()
    await app[IN_FLIGHT].wait_zero()
    await asyncio.sleep(DRAIN_LINGER_S)
    await app[IN_FLIGHT].wait_zero()
    await runner.cleanup()
    await plane.close()
    return _answered(metrics)


def _answered(metrics: ServerMetrics) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == f"{family.name}_total" and "code" in sample.labels:
                counts[sample.labels["code"]] = sample.value
    return counts


def main(environ: Mapping[str, str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(os.environ if environ is None else environ)
    except ConfigError as error:
        print(f"slo-model-server: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # Heavy imports (torch) only after the settings are known good: a bad value fails in milliseconds.
    from model_server.model import ModelLoadError

    try:
        model = load(config)
    except ModelLoadError as error:
        print(f"slo-model-server: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    log.info("starting: %s platform=%s device=%s", config.summary(), model.platform, model.device)
    try:
        import uvloop

        answered = uvloop.run(serve(config, model))
    except ImportError:
        answered = asyncio.run(serve(config, model))
    log.info(
        "drained and stopped; answered requests by code: %s",
        " ".join(f"{code}={int(n)}" for code, n in sorted(answered.items())) or "none",
    )


if __name__ == "__main__":
    main()
