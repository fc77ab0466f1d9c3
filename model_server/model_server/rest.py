"""HTTP routes of the Open Inference Protocol (KServe v2 / Triton HTTP) and ``/metrics``, on aiohttp.

Routes only: each handler parses, calls the data plane and turns a
:class:`~model_server.errors.ServerError` into its status from :data:`~model_server.errors.HTTP_STATUS`
with a ``{"error": "..."}`` body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Final

from aiohttp import web

from model_server.dataplane import DataPlane
from model_server.errors import InvalidInput, PayloadTooLarge, ServerError, Unavailable, http_status
from model_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Largest request body; a bigger one answers 413 before it is parsed."""

BINARY_HEADER: Final = "Inference-Header-Content-Length"
"""Binary tensor extension: the JSON header's length; the tensors' bytes follow it."""

PLANE: Final = web.AppKey("plane", DataPlane)

log = logging.getLogger(__name__)


class InFlight:
    """Counts inference handlers between arrival and response, so a drain can wait for the last one."""

    def __init__(self) -> None:
        self.count = 0
        self._zero = asyncio.Event()
        self._zero.set()

    def enter(self) -> None:
        self.count += 1
        self._zero.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        await self._zero.wait()


IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)


def create_app(plane: DataPlane, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[PLANE] = plane
    app[IN_FLIGHT] = InFlight()
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name}", model_metadata)
    app.router.add_get("/v2/models/{name}/ready", model_ready)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_get("/metrics", metrics)
    return app


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json")


def _error(error: ServerError) -> web.Response:
    response = _json({"error": str(error)}, http_status(error))
    if isinstance(error, Unavailable):
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response


async def server_metadata(request: web.Request) -> web.Response:
    return _json(request.app[PLANE].server_metadata())


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = request.app[PLANE].ready
    return _json({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: web.Request) -> web.Response:
    try:
        return _json(request.app[PLANE].model_metadata(request.match_info["name"]))
    except ServerError as error:
        return _error(error)


async def model_ready(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    try:
        plane.check_model(request.match_info["name"])
    except ServerError as error:
        return _error(error)
    return _json({"name": plane.model_name, "ready": plane.ready}, 200 if plane.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[PLANE].metrics.exposition())
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


async def infer(request: web.Request) -> web.Response:
    arrival = time.perf_counter()
    plane = request.app[PLANE]
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        response = await _infer(request, plane)
        plane.metrics.count_request(response.status)
        if response.status == 200:
            plane.metrics.request_duration.observe(time.perf_counter() - arrival)
        return response
    finally:
        in_flight.leave()


async def _infer(request: web.Request, plane: DataPlane) -> web.Response:
    try:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"request body exceeds the server's limit of {request.app._client_max_size} bytes"
            ) from None
        body, binary = _split_body(raw, request.headers.get(BINARY_HEADER))
        return _json(await plane.infer(request.match_info["name"], body, binary))
    except ServerError as error:
        return _error(error)
    except Exception:  # a bug, not the client's fault: answer 500 and keep serving
        log.exception("unexpected error while serving %s", request.path)
        return _json({"error": "internal server error"}, 500)


def _split_body(raw: bytes, header_length: str | None) -> tuple[object, bytes]:
    json_part, binary = raw, b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{BINARY_HEADER} must be an integer, got {header_length!r}") from None
        if not 0 <= length <= len(raw):
            raise InvalidInput(f"{BINARY_HEADER}={length} is outside the body of {len(raw)} bytes")
        json_part, binary = raw[:length], raw[length:]
    try:
        return json.loads(json_part), binary
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
