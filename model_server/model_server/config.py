"""Server settings read from the environment: the contract with the operator, checked before any work.

Parsing is plain code (no pydantic: the server must not pull in the operator's dependencies), and
every refusal is a :class:`ConfigError` whose message names the variable, the value and what is
allowed, so that ``__main__`` can print it as one line and exit 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from slo_contract import env

BUNDLED_MODELS: Final[tuple[str, ...]] = ("ranking", "ranking-large")
"""Names accepted by ``MODEL``; the first is the default. Kept here so parsing needs no torch."""

DEVICES: Final[tuple[str, ...]] = ("auto", "cpu", "cuda")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that stops start-up; the message is the whole one-line explanation."""


@dataclass(frozen=True)
class ServerConfig:
    max_batch_size: int = 32
    max_batch_delay_ms: float = 2.0
    max_queue_size: int = 1024
    port: int = 8080
    model: str = BUNDLED_MODELS[0]
    model_path: Path | None = None
    model_name: str = BUNDLED_MODELS[0]
    device: str = "auto"
    torch_num_threads: int = 1
    profile_max_batch_size: int = 32

    def summary(self) -> str:
        """The effective settings as ``NAME=value`` pairs, for the start-up log line."""
        return " ".join(
            f"{name}={value}"
            for name, value in (
                (env.MODEL_NAME, self.model_name),
                (env.MODEL_PATH if self.model_path else env.MODEL, self.model_path or self.model),
                (env.MAX_BATCH_SIZE, self.max_batch_size),
                (env.MAX_BATCH_DELAY_MS, self.max_batch_delay_ms),
                (env.MAX_QUEUE_SIZE, self.max_queue_size),
                (env.PORT, self.port),
                (env.DEVICE, self.device),
                (env.TORCH_NUM_THREADS, self.torch_num_threads),
                (env.PROFILE_MAX_BATCH_SIZE, self.profile_max_batch_size),
            )
        )


def _read(environ: Mapping[str, str], name: str, parse: Callable[[str], T], default: T, allowed: str) -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is invalid: expected {allowed}") from None


def _int_in(low: int, high: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(text)
        return value

    return parse


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return parse


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError(text)
    return path


def load_config(environ: Mapping[str, str]) -> ServerConfig:
    """Parse and check every variable of :mod:`slo_contract.env`; raises :class:`ConfigError`."""
    defaults = ServerConfig()
    max_batch_size = _read(
        environ, env.MAX_BATCH_SIZE, _int_in(1, None), defaults.max_batch_size, "an integer >= 1"
    )
    model_path = _read(environ, env.MODEL_PATH, _existing_file, None, "the path of an existing file")
    model = _read(
        environ, env.MODEL, _one_of(BUNDLED_MODELS), defaults.model, f"one of {', '.join(BUNDLED_MODELS)}"
    )
    default_name = model_path.stem if model_path else model
    model_name = _read(
        environ, env.MODEL_NAME, _model_name, default_name, "a name of letters, digits, '.', '_' or '-'"
    )
    return ServerConfig(
        max_batch_size=max_batch_size,
        max_batch_delay_ms=_read(
            environ,
            env.MAX_BATCH_DELAY_MS,
            _non_negative_float,
            defaults.max_batch_delay_ms,
            "a number of milliseconds >= 0",
        ),
        max_queue_size=_read(
            environ, env.MAX_QUEUE_SIZE, _int_in(1, None), defaults.max_queue_size, "an integer >= 1"
        ),
        port=_read(environ, env.PORT, _int_in(1, 65535), defaults.port, "an integer in 1..65535"),
        model=model,
        model_path=model_path,
        model_name=model_name,
        device=_read(environ, env.DEVICE, _one_of(DEVICES), defaults.device, f"one of {', '.join(DEVICES)}"),
        torch_num_threads=_read(
            environ, env.TORCH_NUM_THREADS, _int_in(1, None), defaults.torch_num_threads, "an integer >= 1"
        ),
        profile_max_batch_size=_read(
            environ, env.PROFILE_MAX_BATCH_SIZE, _int_in(1, None), max_batch_size, "an integer >= 1"
        ),
    )


def _model_name(text: str) -> str:
    if not all(ch.isalnum() or ch in "._-" for ch in text):
        raise ValueError(text)
    return text
