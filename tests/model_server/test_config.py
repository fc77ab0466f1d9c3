"""Settings from the environment: parsing, and the real entry point refusing bad values (exit 2, one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_server.config import ConfigError, ServerConfig, load_config
from slo_contract import env


def test_defaults_and_effective_values(tmp_path: Path) -> None:
    assert load_config({}) == ServerConfig()
    model_file = tmp_path / "scorer.pt"
    model_file.write_bytes(b"")
    config = load_config(
        {
            env.MAX_BATCH_SIZE: "16",
            env.MAX_BATCH_DELAY_MS: "0.5",
            env.MAX_QUEUE_SIZE: "10",
            env.PORT: "9000",
            env.MODEL_PATH: str(model_file),
            env.DEVICE: "cpu",
            env.TORCH_NUM_THREADS: "2",
        }
    )
    assert (config.max_batch_size, config.max_batch_delay_ms, config.max_queue_size) == (16, 0.5, 10)
    assert (config.port, config.device, config.torch_num_threads) == (9000, "cpu", 2)
    assert config.model_name == "scorer", "a model file is served under its file name by default"
    assert config.profile_max_batch_size == 16, "the profile covers MAX_BATCH_SIZE unless told otherwise"
    assert "MAX_BATCH_SIZE=16" in config.summary()


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        (env.MAX_BATCH_SIZE, "0", ">= 1"),
        (env.MAX_BATCH_SIZE, "eight", ">= 1"),
        (env.MAX_BATCH_DELAY_MS, "-1", ">= 0"),
        (env.MAX_BATCH_DELAY_MS, "nan", ">= 0"),
        (env.MAX_QUEUE_SIZE, "0", ">= 1"),
        (env.PORT, "70000", "1..65535"),
        (env.MODEL, "gpt", "ranking"),
        (env.MODEL_PATH, "/no/such/model.pt", "existing file"),
        (env.MODEL_NAME, "a/b", "letters"),
        (env.DEVICE, "tpu", "auto, cpu, cuda"),
        (env.TORCH_NUM_THREADS, "0", ">= 1"),
        (env.PROFILE_MAX_BATCH_SIZE, "-4", ">= 1"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_the_range(name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    message = str(caught.value)
    assert name in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(
    ("name", "value"), [(env.MAX_BATCH_SIZE, "0"), (env.PORT, "http"), (env.DEVICE, "gpu")]
)
def test_the_server_refuses_to_start_with_one_line_and_exit_2(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model_server"],
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert value in lines[0]
    assert "Traceback" not in result.stderr


def test_a_model_file_that_cannot_load_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    result = subprocess.run(
        [sys.executable, "-m", "model_server"],
        env={**os.environ, env.MODEL_PATH: str(broken)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "broken.pt" in result.stderr
