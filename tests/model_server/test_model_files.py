"""MODEL_PATH loading: a TorchScript file and a torch.export program, each saved by the test itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_server.model import SPEC_FILE, ModelLoadError, load_model_file

CPU = torch.device("cpu")

# torch.jit is deprecated in torch 2.13 but TorchScript files are what many users still have to serve.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class Scorer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(features) + ids.float().sum(dim=1, keepdim=True)


def inputs(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "features": rng.standard_normal((rows, 4)).astype(np.float32),
        "ids": rng.integers(0, 9, (rows, 3)).astype(np.int64),
    }


def expected(batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = Scorer()(
            torch.from_numpy(batch["features"]), torch.from_numpy(batch["ids"])
        ).numpy()
    return out


SPECS = {
    "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [4]},
        {"name": "ids", "datatype": "INT64", "shape": [3]},
    ],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [2]}],
}


def test_torchscript_with_embedded_specs(tmp_path: Path) -> None:
    path = tmp_path / "scorer.pt"
    torch.jit.save(torch.jit.script(Scorer()), str(path), _extra_files={SPEC_FILE: json.dumps(SPECS)})
    model = load_model_file(path, CPU)
    assert model.platform == "pytorch_torchscript"
    assert [s.name for s in model.inputs] == ["features", "ids"]
    assert model.inputs[1].datatype == "INT64"
    assert model.inputs[1].shape == (3,)
    batch = inputs(5)
    assert np.allclose(model.predict(batch)["score"], expected(batch), atol=1e-6)


def test_torchscript_with_sidecar_specs(tmp_path: Path) -> None:
    path = tmp_path / "scorer.pt"
    torch.jit.save(torch.jit.script(Scorer()), str(path))
    with pytest.raises(ModelLoadError, match=r"model_server\.json"):
        load_model_file(path, CPU)
    (tmp_path / "scorer.pt.json").write_text(json.dumps(SPECS))
    batch = inputs(2)
    assert np.allclose(load_model_file(path, CPU).predict(batch)["score"], expected(batch), atol=1e-6)


def test_exported_program_describes_its_own_tensors(tmp_path: Path) -> None:
    path = tmp_path / "scorer.pt2"
    example = {k: torch.from_numpy(v) for k, v in inputs(2).items()}
    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        Scorer(),
        (example["features"], example["ids"]),
        dynamic_shapes={"features": {0: batch_dim}, "ids": {0: batch_dim}},
    )
    torch.export.save(program, str(path))
    model = load_model_file(path, CPU)
    assert model.platform == "pytorch_export"
    assert [(s.name, s.datatype, s.shape) for s in model.inputs] == [
        ("features", "FP32", (4,)),
        ("ids", "INT64", (3,)),
    ]
    assert [(s.datatype, s.shape) for s in model.outputs] == [("FP32", (2,))]
    for rows in (1, 7):
        batch = inputs(rows)
        assert np.allclose(model.predict(batch)["output_0"], expected(batch), atol=1e-6)


def test_exported_program_with_a_fixed_batch_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "fixed.pt2"
    example = {k: torch.from_numpy(v) for k, v in inputs(2).items()}
    torch.export.save(torch.export.export(Scorer(), (example["features"], example["ids"])), str(path))
    with pytest.raises(ModelLoadError, match="dynamic"):
        load_model_file(path, CPU)


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="not a TorchScript or torch"):
        load_model_file(path, CPU)


def test_the_bundled_model_is_deterministic_and_tracing_keeps_its_scores() -> None:
    from model_server.model import bundled_model

    traced = bundled_model("ranking", CPU)
    eager = bundled_model("ranking", CPU, trace=False)
    other_seed = bundled_model("ranking", CPU, seed=1, trace=False)
    for rows in (1, 5, 33):
        batch = traced.example_batch(rows, seed=rows)
        scores = traced.predict(batch)["click_probability"]
        assert scores.shape == (rows, 1)
        assert np.allclose(scores, eager.predict(batch)["click_probability"], atol=1e-6)
        assert not np.allclose(scores, other_seed.predict(batch)["click_probability"], atol=1e-4)
