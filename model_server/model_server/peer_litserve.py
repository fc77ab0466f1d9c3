"""The benchmark's peer: the same bundled model served by LitServe with its own dynamic batching.

Only ``python -m model_server.bench`` uses this (LitServe is a development dependency, not one of the
server's). It answers the same Open Inference Protocol request body at the same path, with the same
validation code, so the load generator and the P99 bound are the same for both servers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import litserve as ls
import numpy as np
import torch

from model_server.dataplane import decode_inputs, encode_outputs
from model_server.model import Array, ServedModel, bundled_model


class RankingAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model_name: str, torch_threads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.torch_threads = torch_threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.torch_threads)
        self.model: ServedModel = bundled_model(self.model_name, torch.device(device))
        self.model.predict(self.model.example_batch(1))

    # Unannotated on purpose: LitServe reads this annotation to pick how to parse the body (JSON here).
    def decode_request(self, request, **kwargs: Any) -> dict[str, Array]:  # type: ignore[no-untyped-def]
        arrays, _ = decode_inputs(self.model.inputs, request)
        return arrays

    def batch(self, inputs: Sequence[dict[str, Array]]) -> dict[str, Array]:
        return {name: np.concatenate([item[name] for item in inputs]) for name in inputs[0]}

    def predict(self, x: dict[str, Array], **kwargs: Any) -> dict[str, Array]:
        return self.model.predict(x)

    def unbatch(self, output: dict[str, Array]) -> list[dict[str, Array]]:
        rows = len(next(iter(output.values())))
        return [{name: array[i : i + 1] for name, array in output.items()} for i in range(rows)]

    def encode_response(self, output: dict[str, Array], **kwargs: Any) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "outputs": encode_outputs(self.model.outputs, output, None),
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LitServe serving the bundled model (benchmark peer)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="ranking")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    api = RankingAPI(
        args.model,
        args.torch_threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000.0,
        api_path=f"/v2/models/{args.model}/infer",
    )
    server = ls.LitServer(api, accelerator=args.device, devices=1, workers_per_device=1, timeout=30)
    server.run(
        host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
