"""Environment variables of the model server: the knobs the operator turns.

The operator writes ``MAX_BATCH_SIZE`` into the Deployment's container env; the server
reads all of these at start-up and refuses bad values with one clear line (exit 2).
"""

from typing import Final

MAX_BATCH_SIZE: Final = "MAX_BATCH_SIZE"
"""Largest batch one model execution may carry (int >= 1). The operator's second knob."""

MAX_BATCH_DELAY_MS: Final = "MAX_BATCH_DELAY_MS"
"""Longest a request waits for its batch to fill, from the oldest request's arrival (float >= 0)."""

MAX_QUEUE_SIZE: Final = "MAX_QUEUE_SIZE"
"""Requests allowed to wait; beyond it the server sheds load with 503 (int >= 1)."""

PORT: Final = "PORT"
"""HTTP port of the Open Inference Protocol endpoints and ``/metrics``."""

MODEL: Final = "MODEL"
"""Which bundled model to load when ``MODEL_PATH`` is unset."""

MODEL_PATH: Final = "MODEL_PATH"
"""A TorchScript file or a ``torch.export`` program to serve instead of a bundled model."""

MODEL_NAME: Final = "MODEL_NAME"
"""Name served in the protocol's paths and in the ``model`` metric label."""

DEVICE: Final = "DEVICE"
"""``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

TORCH_NUM_THREADS: Final = "TORCH_NUM_THREADS"
"""Intra-op threads for torch (int >= 1)."""

PROFILE_MAX_BATCH_SIZE: Final = "PROFILE_MAX_BATCH_SIZE"
"""Largest batch size timed by the start-up profile (defaults to ``MAX_BATCH_SIZE``)."""

ALL: Final[tuple[str, ...]] = (
    MAX_BATCH_SIZE,
    MAX_BATCH_DELAY_MS,
    MAX_QUEUE_SIZE,
    PORT,
    MODEL,
    MODEL_PATH,
    MODEL_NAME,
    DEVICE,
    TORCH_NUM_THREADS,
    PROFILE_MAX_BATCH_SIZE,
)
