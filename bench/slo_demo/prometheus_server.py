"""A throw-away Prometheus server for the demo: config and data in a temp dir, loopback only.

It scrapes the model servers listed in a ``file_sd`` target file (the local actuator keeps that
file in sync), every second, so the operator's reader sees the same series, with the same
``namespace``/``inferenceservice`` labels, as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from types import TracebackType

import aiohttp
import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus is missing, or did not start."""


def scrape_config(file_sd_path: Path, *, scrape_interval_s: float) -> dict[str, object]:
    """The whole ``prometheus.yml``: one job over the file_sd targets."""
    interval = f"{int(scrape_interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "model-servers",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "file_sd_configs": [{"files": [str(file_sd_path)], "refresh_interval": "1s"}],
            }
        ],
    }


class PrometheusServer:
    """``async with PrometheusServer(...) as prometheus: prometheus.url``."""

    def __init__(
        self,
        work_dir: Path,
        file_sd_path: Path,
        *,
        port: int,
        scrape_interval_s: float = 1.0,
        binary: str = DEFAULT_BINARY,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._work_dir = work_dir
        self._file_sd_path = file_sd_path
        self._port = port
        self._scrape_interval_s = scrape_interval_s
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self.log_path = work_dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        binary = shutil.which(self._binary)
        if binary is None:
            raise PrometheusError(
                f"{self._binary} not found: install Debian's 'prometheus' package (make install does)"
            )
        self._work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self._work_dir / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(scrape_config(self._file_sd_path, scrape_interval_s=self._scrape_interval_s))
        )
        data_dir = self._work_dir / "prometheus-data"
        data_dir.mkdir(exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{self._port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    raise PrometheusError(
                        f"prometheus exited with {self._process.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + "/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise PrometheusError(
            f"prometheus not ready after {self._start_timeout_s:.0f} s; see {self.log_path}"
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL the process group after 10 s; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5.0)

    def kill_now(self) -> None:
        """For ``atexit``: no event loop needed."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def __aenter__(self) -> PrometheusServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
