"""Fixtures for the model server tests: the bundled model in-process, real servers as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model_server.model import ServedModel, bundled_model


@pytest.fixture(scope="session")
def ranking_model() -> ServedModel:
    torch.set_num_threads(1)
    return bundled_model("ranking", torch.device("cpu"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``python -m model_server`` on 127.0.0.1 (the real entry point), its log in a temporary file."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="model-server-", suffix=".log", delete=False)  # noqa: SIM115
        full_env = {**os.environ, "PORT": str(self.port), "TORCH_NUM_THREADS": "1", **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "model_server"], env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout_s: float = 90.0) -> ServerProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text()

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One real server shared by a module's tests (MAX_BATCH_SIZE=8)."""
    process = ServerProcess(MAX_BATCH_SIZE="8", MAX_BATCH_DELAY_MS="2")
    try:
        yield process.wait_ready()
    finally:
        process.close()


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's ``/metrics`` parsed by prometheus_client: value by (sample name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
