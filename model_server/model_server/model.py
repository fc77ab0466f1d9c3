"""Loading and running a model: the bundled ranking models or a user's TorchScript / torch.export file.

This layer knows torch and nothing about HTTP or batching. A :class:`ServedModel` runs one already
stacked batch (``predict``) and describes its tensors (:class:`TensorSpec`) so that the protocol
layer can refuse a bad request before it reaches a batch.
"""

from __future__ import annotations

import itertools
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from model_server.config import BUNDLED_MODELS

NUMPY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
"""Open Inference Protocol datatypes this server accepts, and their numpy dtypes."""

_DATATYPE_OF_TORCH: Final[dict[torch.dtype, str]] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}

SPEC_FILE: Final = "model_server.json"
"""Name of the tensor description stored in a TorchScript archive (``_extra_files``) or beside it."""

Array = npt.NDArray[Any]


class ModelLoadError(ValueError):
    """The model file cannot be served; the message says why and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; ``shape`` is per row, without the leading batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return NUMPY_DTYPES[self.datatype]

    @property
    def elements_per_row(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def metadata(self) -> dict[str, object]:
        """The protocol's tensor metadata; ``-1`` marks the variable batch dimension."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.shape]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TensorSpec:
        try:
            datatype = str(raw["datatype"]).upper()
            shape = tuple(int(d) for d in raw["shape"])
            spec = cls(name=str(raw["name"]), datatype=datatype, shape=shape)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f"bad tensor description {raw!r}: {error}") from None
        if datatype not in NUMPY_DTYPES:
            raise ModelLoadError(f"tensor {spec.name!r}: datatype {datatype} not in {sorted(NUMPY_DTYPES)}")
        if any(d < 1 for d in shape):
            raise ModelLoadError(f"tensor {spec.name!r}: per-row shape {list(shape)} must be fixed and > 0")
        return spec


class ServedModel:
    """A module plus its tensor specs and device; ``predict`` runs one batch in the calling thread."""

    def __init__(
        self,
        module: Any,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        device: torch.device,
        platform: str,
    ) -> None:
        self.module = module
        self.inputs = inputs
        self.outputs = outputs
        self.device = device
        self.platform = platform
        self._pin = device.type == "cuda"

    def predict(self, batch: Mapping[str, Array]) -> dict[str, Array]:
        """Run one stacked batch (row-major arrays keyed by input name); outputs keyed by name."""
        with torch.inference_mode():
            args = [self._to_device(torch.from_numpy(batch[spec.name])) for spec in self.inputs]
            result = self.module(*args)
            tensors = _as_tuple(result)
            if len(tensors) != len(self.outputs):
                raise RuntimeError(
                    f"model returned {len(tensors)} tensors, its spec lists {len(self.outputs)}"
                )
            return {
                spec.name: tensor.detach().to("cpu").numpy()
                for spec, tensor in zip(self.outputs, tensors, strict=True)
            }

    def example_batch(self, rows: int, seed: int = 0) -> dict[str, Array]:
        """Valid random inputs, for the start-up profile, warm-up and benchmarks."""
        rng = np.random.default_rng(seed)
        batch: dict[str, Array] = {}
        for spec in self.inputs:
            shape = (rows, *spec.shape)
            if spec.numpy_dtype.kind == "f":
                batch[spec.name] = rng.standard_normal(shape).astype(spec.numpy_dtype)
            elif spec.numpy_dtype.kind == "b":
                batch[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
            else:
                batch[spec.name] = rng.integers(0, 100, shape).astype(spec.numpy_dtype)
        return batch

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self._pin:
            return tensor
        # Pinned host memory lets the copy run asynchronously with the host's next work.
        return tensor.pin_memory().to(self.device, non_blocking=True)


def _as_tuple(result: object) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, list | tuple) and all(isinstance(t, torch.Tensor) for t in result):
        return tuple(result)
    if isinstance(result, dict):
        return tuple(result.values())
    raise RuntimeError(f"model returned {type(result).__name__}, expected a tensor or a tuple of tensors")


# --- Bundled models -----------------------------------------------------------------------------


class RankingModel(nn.Module):
    """A DLRM-style click-through ranking model: the seed's "Show Recommendations" workload.

    Sparse ids go through embedding bags (hashed into each table, so no id can make a batch fail),
    dense features through a bottom MLP; pairwise dot products of all feature vectors feed a top MLP
    that outputs a click probability. Per-row work is dominated by the top MLP's weights, which a
    batch reads once for all its rows: that is what makes batching pay off on a CPU.
    """

    def __init__(
        self,
        num_dense: int,
        num_sparse: int,
        rows_per_table: int,
        embedding_dim: int,
        bottom: tuple[int, ...],
        top: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.num_sparse = num_sparse
        self.table_offsets: torch.Tensor
        self.pair_rows: torch.Tensor
        self.pair_cols: torch.Tensor
        self.rows_per_table = rows_per_table
        self.embeddings = nn.EmbeddingBag(num_sparse * rows_per_table, embedding_dim, mode="sum")
        self.register_buffer("table_offsets", torch.arange(num_sparse, dtype=torch.int64) * rows_per_table)
        self.bottom = _mlp((num_dense, *bottom, embedding_dim), last_activation=True)
        features = num_sparse + 1
        interactions = features * (features - 1) // 2
        self.top = _mlp((interactions + embedding_dim, *top, 1), last_activation=False)
        rows, cols = torch.triu_indices(features, features, offset=1)
        self.register_buffer("pair_rows", rows)
        self.register_buffer("pair_cols", cols)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        dense_vector = self.bottom(dense)
        ids = torch.remainder(sparse, self.rows_per_table) + self.table_offsets.unsqueeze(1)
        pooled = self.embeddings(ids.flatten(0, 1)).unflatten(0, (-1, self.num_sparse))
        features = torch.cat([dense_vector.unsqueeze(1), pooled], dim=1)
        dots = torch.bmm(features, features.transpose(1, 2))[:, self.pair_rows, self.pair_cols]
        return torch.sigmoid(self.top(torch.cat([dense_vector, dots], dim=1)))


def _mlp(widths: tuple[int, ...], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(width_in, width_out))
        if last_activation or index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class _Preset:
    num_dense: int
    num_sparse: int
    ids_per_feature: int
    rows_per_table: int
    embedding_dim: int
    bottom: tuple[int, ...]
    top: tuple[int, ...]


_PRESETS: Final[dict[str, _Preset]] = {
    "ranking": _Preset(13, 26, 2, 4000, 64, (512, 256), (3072, 3072, 1024, 256)),
    "ranking-large": _Preset(13, 26, 4, 4000, 128, (512, 256), (4096, 4096, 4096, 256)),
}
assert tuple(_PRESETS) == BUNDLED_MODELS


def bundled_model(name: str, device: torch.device, seed: int = 0, trace: bool = True) -> ServedModel:
    """Build a bundled preset with weights drawn from ``seed``: same name, same seed, same scores.

    ``trace`` runs it as a frozen TorchScript graph: an eager forward takes the GIL back after each of
    its ~20 operators, and behind a busy event loop each of those waits up to the switch interval (a
    batch of 16 went from 13 ms to 290 ms in a measurement); the graph runs with far fewer hand-offs.
    """
    preset = _PRESETS[name]
    generator = torch.Generator().manual_seed(seed)
    module = RankingModel(
        preset.num_dense,
        preset.num_sparse,
        preset.rows_per_table,
        preset.embedding_dim,
        preset.bottom,
        preset.top,
    )
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter.shape[-1] if parameter.dim() > 1 else parameter.shape[0]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
    module = module.eval().to(device)
    inputs = (
        TensorSpec("dense_features", "FP32", (preset.num_dense,)),
        TensorSpec("sparse_ids", "INT64", (preset.num_sparse, preset.ids_per_feature)),
    )
    outputs = (TensorSpec("click_probability", "FP32", (1,)),)
    served = ServedModel(module, inputs, outputs, device, platform="pytorch_bundled")
    if trace:
        example = tuple(torch.from_numpy(a).to(device) for a in served.example_batch(3).values())
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of export; it still works
            traced = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
            served.module = torch.jit.freeze(traced)
    return served


# --- User models ------------------------------------------------------------------------------


def load_model_file(path: Path, device: torch.device) -> ServedModel:
    """Load a ``torch.export`` program (``torch.export.save``) or a TorchScript file (``torch.jit.save``).

    An exported program describes its own tensors; its first dimension must be dynamic (export with
    ``dynamic_shapes``) so batches of any size can run. A TorchScript file cannot say its dtypes and
    shapes, so it carries a ``model_server.json`` (in ``_extra_files`` or beside the file as
    ``<file>.json``): ``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``.
    """
    if _is_exported_program(path):
        return _load_exported(path, device)
    return _load_torchscript(path, device)


def _is_exported_program(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ModelLoadError(f"{path} is not a TorchScript or torch.export archive (not a zip)") from None
    # torch.export's PT2 archive has an ``archive_format`` entry (older ones a serialized program).
    return any(n.endswith(("/archive_format", "serialized_exported_program.json")) for n in names)


def _load_exported(path: Path, device: torch.device) -> ServedModel:
    try:
        program = torch.export.load(str(path))
    except Exception as error:
        raise ModelLoadError(f"cannot load torch.export program {path}: {error}") from error
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    nodes = {node.name: node for node in program.graph.nodes}
    inputs = tuple(
        _spec_of_value(name, nodes[name].meta.get("val"), path)
        for name in program.graph_signature.user_inputs
    )
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    output_values = [arg.meta.get("val") for arg in output_node.args[0]]
    outputs = tuple(_spec_of_value(f"output_{i}", value, path) for i, value in enumerate(output_values))
    return ServedModel(program.module(), inputs, outputs, device, platform="pytorch_export")


def _spec_of_value(name: str, value: object, path: Path) -> TensorSpec:
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"{path}: {name} is not a tensor; the server serves tensor in, tensor out")
    dims = list(value.shape)
    if not dims or isinstance(dims[0], int):
        raise ModelLoadError(
            f"{path}: {name} has a fixed first dimension {dims[:1]}; export with a dynamic batch dimension "
            "(dynamic_shapes={...: {0: torch.export.Dim('batch')}}) so batches of any size can run"
        )
    if not all(isinstance(d, int) for d in dims[1:]):
        raise ModelLoadError(f"{path}: {name} must have fixed dimensions after the batch one, got {dims}")
    datatype = _DATATYPE_OF_TORCH.get(value.dtype)
    if datatype is None:
        raise ModelLoadError(f"{path}: {name} has dtype {value.dtype}, not one the protocol carries")
    return TensorSpec(name, datatype, tuple(int(d) for d in dims[1:]))


def _load_torchscript(path: Path, device: torch.device) -> ServedModel:
    extra_files = {SPEC_FILE: ""}
    try:
        module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location=device, _extra_files=extra_files
        )
    except Exception as error:
        raise ModelLoadError(f"cannot load TorchScript file {path}: {error}") from error
    text = extra_files[SPEC_FILE]
    sidecar = path.with_name(path.name + ".json")
    if not text and sidecar.is_file():
        text = sidecar.read_text()
    if not text:
        raise ModelLoadError(
            f"{path}: TorchScript does not record tensor dtypes and shapes; save it with "
            f"_extra_files={{'{SPEC_FILE}': ...}} or put {sidecar.name} beside it"
        )
    try:
        raw = json.loads(text)
        inputs = tuple(TensorSpec.from_json(item) for item in raw["inputs"])
        outputs = tuple(TensorSpec.from_json(item) for item in raw["outputs"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: bad {SPEC_FILE}: {error!r}") from None
    return ServedModel(module.eval(), inputs, outputs, device, platform="pytorch_torchscript")


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a load error, not a silent fallback."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda but no CUDA device is available")
    return torch.device(choice)
