"""The Open Inference Protocol routes in-process (aiohttp test server on 127.0.0.1): answers and bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from model_server.dataplane import DataPlane
from model_server.metrics import ServerMetrics
from model_server.model import ServedModel, TensorSpec
from model_server.rest import create_app

ClientFactory = Callable[..., Any]


class SlowOrFailing(torch.nn.Module):
    """A real torch model that sleeps ``delay`` per batch and fails on any negative input."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        if bool((x < 0).any()):
            raise ValueError("negative input")
        return x.sum(dim=1, keepdim=True)


def small_model(delay_s: float = 0.0) -> ServedModel:
    return ServedModel(
        SlowOrFailing(delay_s),
        (TensorSpec("x", "FP32", (3,)),),
        (TensorSpec("total", "FP32", (1,)),),
        torch.device("cpu"),
        platform="pytorch_test",
    )


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[tuple[TestClient[Any, Any], DataPlane]] = []

    async def make(
        model: ServedModel, name: str = "m", max_batch_size: int = 8, max_queue_size: int = 64, **app: Any
    ) -> TestClient[Any, Any]:
        metrics = ServerMetrics(name, max_batch_size)
        plane = DataPlane(model, name, max_batch_size, 1.0, max_queue_size, metrics)
        plane.start()
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(plane, **app), host="127.0.0.1"))
        await client.start_server()
        clients.append((client, plane))
        return client

    yield make
    for client, plane in clients:
        await client.close()
        await plane.close()


def x_request(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(rows), 3], "datatype": "FP32", "data": rows, **extra}]}


async def test_health_metadata_and_infer(make_client: ClientFactory) -> None:
    client = await make_client(small_model())
    assert (await client.get("/v2/health/live")).status == 200
    assert (await (await client.get("/v2/health/ready")).json()) == {"ready": True}
    assert (await client.get("/v2/models/m/ready")).status == 200
    metadata = await (await client.get("/v2/models/m")).json()
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    response = await client.post("/v2/models/m/infer", json={**x_request([[1, 2, 3], [4, 5, 6]]), "id": "r1"})
    assert response.status == 200
    body = await response.json()
    assert body["id"] == "r1"
    assert body["outputs"] == [{"name": "total", "datatype": "FP32", "shape": [2, 1], "data": [6.0, 15.0]}]


async def test_the_bundled_ranking_model_serves_deterministic_scores(
    make_client: ClientFactory, ranking_model: ServedModel
) -> None:
    client = await make_client(ranking_model, name="ranking")
    batch = ranking_model.example_batch(2, seed=3)
    request = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": s.datatype, "data": v.ravel().tolist()}
            for (k, v), s in zip(batch.items(), ranking_model.inputs, strict=True)
        ]
    }
    body = await (await client.post("/v2/models/ranking/infer", json=request)).json()
    expected = ranking_model.predict(batch)["click_probability"].ravel()
    assert np.allclose(body["outputs"][0]["data"], expected, atol=1e-6)
    assert all(0 < p < 1 for p in body["outputs"][0]["data"])


BAD_REQUESTS: list[tuple[str, bytes | dict[str, Any], str]] = [
    ("malformed JSON", b'{"inputs": [', "not valid JSON"),
    ("not an object", b"[1, 2]", "JSON object"),
    ("no inputs", {"inputs": []}, "non-empty 'inputs'"),
    (
        "unknown input",
        {"inputs": [{"name": "z", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        "'z'",
    ),
    (
        "wrong dtype",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]},
        "FP32",
    ),
    ("wrong shape", x_request([[1, 2, 3, 4]]) | {}, "shape"),
    (
        "element count",
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        "needs 6",
    ),
    (
        "ragged data",
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4]]}]},
        "regular",
    ),
    (
        "strings",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": ["a", "b", "c"]}]},
        "kind",
    ),
    (
        "shape not ints",
        {"inputs": [{"name": "x", "shape": "1x3", "datatype": "FP32", "data": [1, 2, 3]}]},
        "shape",
    ),
    ("too many rows", x_request([[1, 2, 3]] * 9), "MAX_BATCH_SIZE"),
    ("duplicate input", {"inputs": [x_request([[1, 2, 3]])["inputs"][0]] * 2}, "twice"),
    ("unknown output", x_request([[1, 2, 3]]) | {"outputs": [{"name": "nope"}]}, "unknown outputs"),
]


@pytest.mark.parametrize(("case", "payload", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_input_is_a_400_that_says_what_was_wrong(
    make_client: ClientFactory, case: str, payload: bytes | dict[str, Any], message: str
) -> None:
    client = await make_client(small_model())
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await client.post("/v2/models/m/infer", data=data)
    assert response.status == 400, case
    assert message in (await response.json())["error"]
    # The server is unharmed: the next good request is served.
    assert (await client.post("/v2/models/m/infer", json=x_request([[1, 1, 1]]))).status == 200


async def test_unknown_model_is_404(make_client: ClientFactory) -> None:
    client = await make_client(small_model())
    for method, path in (
        ("POST", "/v2/models/other/infer"),
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
    ):
        response = await client.request(method, path, json=x_request([[1, 2, 3]]))
        assert response.status == 404
        assert "other" in (await response.json())["error"]


async def test_a_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    client = await make_client(small_model(), max_body_bytes=1024)
    response = await client.post("/v2/models/m/infer", json=x_request([[1.0, 2.0, 3.0]] * 200))
    assert response.status == 413
    assert "1024" in (await response.json())["error"]
    assert (await client.post("/v2/models/m/infer", json=x_request([[1, 1, 1]]))).status == 200


async def test_a_full_queue_answers_503_with_retry_after_and_others_are_served(
    make_client: ClientFactory,
) -> None:
    client = await make_client(small_model(delay_s=0.2), max_batch_size=1, max_queue_size=2)

    async def post() -> tuple[int, str | None]:
        response = await client.post("/v2/models/m/infer", json=x_request([[1, 2, 3]]))
        return response.status, response.headers.get("Retry-After")

    first = asyncio.ensure_future(post())
    await asyncio.sleep(0.05)  # now running; the next two fill the queue, the rest are shed
    results = await asyncio.gather(first, *(post() for _ in range(6)))
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 3
    assert codes.count(503) == 4
    assert all(retry == "1" for code, retry in results if code == 503)


async def test_a_failing_batch_answers_500_and_the_server_keeps_serving(make_client: ClientFactory) -> None:
    client = await make_client(small_model(delay_s=0.01), max_batch_size=1)
    bad = await client.post("/v2/models/m/infer", json=x_request([[-1, 2, 3]]))
    assert bad.status == 500
    assert "negative input" in (await bad.json())["error"]
    good = await client.post("/v2/models/m/infer", json=x_request([[1, 2, 3]]))
    assert good.status == 200


async def test_binary_tensor_extension(make_client: ClientFactory) -> None:
    client = await make_client(small_model())
    tensor = np.arange(6, dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}
            ]
        }
    ).encode()
    response = await client.post(
        "/v2/models/m/infer",
        data=header + tensor.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 200
    assert (await response.json())["outputs"][0]["data"] == [3.0, 12.0]
    short = await client.post(
        "/v2/models/m/infer",
        data=header + tensor.tobytes()[:20],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status == 400


async def test_metrics_are_exposed_under_the_contract_names(make_client: ClientFactory) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from slo_contract import metrics as names

    client = await make_client(small_model(), name="m", max_batch_size=8)
    for _ in range(3):
        await client.post("/v2/models/m/infer", json=x_request([[1, 2, 3]]))
    await client.post("/v2/models/m/infer", data=b"{")
    text = await (await client.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[(names.REQUESTS_TOTAL, (("code", "200"), ("model", "m")))] == 3
    assert samples[(names.REQUESTS_TOTAL, (("code", "400"), ("model", "m")))] == 1
    assert samples[(names.MAX_BATCH_SIZE, (("model", "m"),))] == 8
    assert samples[(names.QUEUE_DEPTH, (("model", "m"),))] == 0
    for histogram in (
        names.REQUEST_DURATION_SECONDS,
        names.QUEUE_DURATION_SECONDS,
        names.BATCH_SIZE,
        names.BATCH_DURATION_SECONDS,
    ):
        assert samples[(f"{histogram}_count", (("model", "m"),))] >= (
            1 if histogram == names.BATCH_SIZE else 3
        )
        assert any(name == f"{histogram}_bucket" for name, _ in samples)
    assert (
        samples[(f"{names.BATCH_SIZE}_count", (("model", "m"),))]
        == samples[(f"{names.BATCH_DURATION_SECONDS}_count", (("model", "m"),))]
    )
