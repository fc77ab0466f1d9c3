"""Arrival-rate profiles: synthetic shapes and real public traces, and Poisson arrivals drawn from them.

Shared by the HTTP load generator, the local demo and the fleet simulator, so that all three replay
the same load. A profile is piecewise constant (one rate per ``step_s``); only the *shape* of a real
trace matters, so traces are rescaled to the service under test (``scaled_to_peak``). Pure Python and
numpy: no torch, no I/O except the explicit file readers.

Real traces are read at run time from ``../shared/traces/`` beside the repository (see its README);
they are never copied into the repository.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

TRACES_DIR_ENV = "SLO_TRACES_DIR"
"""Overrides where the shared traces are read from."""

AZURE_FUNCTIONS_PER_MINUTE = "azure_functions_2019/derived_total_invocations_per_minute.csv"
AZURE_CODE_PER_SECOND = "azure_llm_2023_code/derived_code_per_second.csv"
AZURE_CODE_REQUESTS = "azure_llm_2023_code/AzureLLMInferenceTrace_code.csv"


class TraceFormatError(ValueError):
    """A trace file that cannot be read as any of the known formats."""


@dataclass(frozen=True)
class RateProfile:
    """A piecewise-constant arrival rate: ``rates_qps[i]`` holds on ``[i*step_s, (i+1)*step_s)``."""

    name: str
    step_s: float
    rates_qps: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(
                f"RateProfile {self.name!r}: step_s must be a positive number, got {self.step_s!r}"
            )
        if not self.rates_qps:
            raise ValueError(f"RateProfile {self.name!r}: rates_qps is empty")
        for i, rate in enumerate(self.rates_qps):
            if not (math.isfinite(rate) and rate >= 0):
                raise ValueError(
                    f"RateProfile {self.name!r}: rates_qps[{i}] = {rate!r} is not a finite rate >= 0"
                )

    @property
    def duration_s(self) -> float:
        return self.step_s * len(self.rates_qps)

    @property
    def peak_qps(self) -> float:
        return max(self.rates_qps)

    @property
    def mean_qps(self) -> float:
        return sum(self.rates_qps) / len(self.rates_qps)

    @property
    def expected_requests(self) -> float:
        return sum(self.rates_qps) * self.step_s

    def rates(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.rates_qps, dtype=np.float64)

    def rate_at(self, t_s: float) -> float:
        """The rate at time ``t_s`` (0 outside ``[0, duration_s)``)."""
        if t_s < 0 or t_s >= self.duration_s:
            return 0.0
        return self.rates_qps[min(int(t_s // self.step_s), len(self.rates_qps) - 1)]

    def scaled_to_peak(self, peak_qps: float) -> RateProfile:
        """The same shape with its highest step at ``peak_qps``."""
        if not (math.isfinite(peak_qps) and peak_qps > 0):
            raise ValueError(f"peak_qps must be a positive number, got {peak_qps!r}")
        if self.peak_qps == 0:
            raise ValueError(f"RateProfile {self.name!r} is all zeros: it cannot be scaled to a peak")
        return self.scaled_by(peak_qps / self.peak_qps)

    def scaled_by(self, factor: float) -> RateProfile:
        """Every rate multiplied by ``factor``."""
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"rate factor must be a finite number >= 0, got {factor!r}")
        return replace(self, rates_qps=tuple(r * factor for r in self.rates_qps))

    def time_scaled(self, factor: float) -> RateProfile:
        """Stretch (factor > 1) or compress (factor < 1) time at the same rates (the request count scales)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"time factor must be a positive number, got {factor!r}")
        return replace(self, step_s=self.step_s * factor)

    def window(self, start_s: float, duration_s: float) -> RateProfile:
        """The whole steps in ``[start_s, start_s + duration_s)``, re-based to start at 0."""
        first = int(start_s // self.step_s)
        count = max(1, math.ceil(duration_s / self.step_s))
        if first < 0 or first >= len(self.rates_qps):
            raise ValueError(f"window start {start_s} s is outside {self.name!r} (0..{self.duration_s} s)")
        return replace(self, rates_qps=self.rates_qps[first : first + count])

    def resampled(self, step_s: float) -> RateProfile:
        """The same rates on a finer or coarser grid (averaging when coarser)."""
        if not (math.isfinite(step_s) and step_s > 0):
            raise ValueError(f"step_s must be a positive number, got {step_s!r}")
        n_out = max(1, round(self.duration_s / step_s))
        # The mean rate over each output step = (cumulative requests at its end - at its start) / step_s.
        edges = np.arange(n_out + 1, dtype=np.float64) * step_s
        cumulative = _cumulative_requests(self, np.minimum(edges, self.duration_s))
        return replace(self, step_s=step_s, rates_qps=tuple(float(r) for r in np.diff(cumulative) / step_s))


def _cumulative_requests(profile: RateProfile, times_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rates = profile.rates()
    cum = np.concatenate(([0.0], np.cumsum(rates) * profile.step_s))
    index = np.minimum((times_s // profile.step_s).astype(np.int64), len(rates) - 1)
    return np.asarray(cum[index] + rates[index] * (times_s - index * profile.step_s), dtype=np.float64)


# --- Synthetic shapes -----------------------------------------------------------------------------


def _steps(duration_s: float, step_s: float) -> int:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number, got {duration_s!r}")
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step_s must be a positive number, got {step_s!r}")
    return max(1, math.ceil(duration_s / step_s))


def constant(qps: float, duration_s: float, *, step_s: float = 1.0, name: str = "constant") -> RateProfile:
    return RateProfile(name, step_s, (float(qps),) * _steps(duration_s, step_s))


def step(
    low_qps: float,
    high_qps: float,
    *,
    at_s: float,
    duration_s: float,
    step_s: float = 1.0,
    name: str = "step",
) -> RateProfile:
    """``low_qps`` until ``at_s``, then ``high_qps``: the sudden rise an autoscaler must catch."""
    n = _steps(duration_s, step_s)
    return RateProfile(
        name, step_s, tuple(float(low_qps if i * step_s < at_s else high_qps) for i in range(n))
    )


def ramp(
    start_qps: float, end_qps: float, *, duration_s: float, step_s: float = 1.0, name: str = "ramp"
) -> RateProfile:
    """A linear change from ``start_qps`` to ``end_qps`` over ``duration_s``."""
    n = _steps(duration_s, step_s)
    return RateProfile(
        name, step_s, tuple(float(start_qps + (end_qps - start_qps) * (i + 0.5) / n) for i in range(n))
    )


def diurnal(
    trough_qps: float,
    peak_qps: float,
    *,
    period_s: float,
    duration_s: float,
    step_s: float = 10.0,
    name: str = "diurnal",
) -> RateProfile:
    """A sinusoid between ``trough_qps`` (at t=0) and ``peak_qps`` (at half a period): a day, compressed."""
    if trough_qps > peak_qps:
        raise ValueError(f"diurnal: trough_qps {trough_qps} is above peak_qps {peak_qps}")
    n = _steps(duration_s, step_s)
    mid, amplitude = (peak_qps + trough_qps) / 2, (peak_qps - trough_qps) / 2
    return RateProfile(
        name,
        step_s,
        tuple(
            float(mid - amplitude * math.cos(2 * math.pi * (i + 0.5) * step_s / period_s)) for i in range(n)
        ),
    )


def on_off(
    on_qps: float,
    off_qps: float,
    *,
    on_s: float,
    off_s: float,
    duration_s: float,
    step_s: float = 1.0,
    name: str = "on_off",
) -> RateProfile:
    """Bursts of ``on_qps`` lasting ``on_s`` separated by ``off_s`` at ``off_qps``, starting off."""
    if on_s <= 0 or off_s <= 0:
        raise ValueError(f"on_off: on_s and off_s must be positive, got {on_s!r} and {off_s!r}")
    n = _steps(duration_s, step_s)
    period = on_s + off_s
    return RateProfile(
        name, step_s, tuple(float(on_qps if (i * step_s) % period >= off_s else off_qps) for i in range(n))
    )


# --- Real traces ----------------------------------------------------------------------------------


def default_traces_dir() -> Path:
    """``$SLO_TRACES_DIR``, else ``../shared/traces`` beside the repository (as in CI and development)."""
    override = os.environ.get(TRACES_DIR_ENV)
    if override:
        return Path(override)
    repo_root = Path(__file__).resolve().parents[3]
    return repo_root.parent / "shared" / "traces"


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"trace file {path} does not exist (traces live in ../shared/traces/; "
            f"set {TRACES_DIR_ENV} to read them from elsewhere)"
        ) from None
    if not rows:
        raise TraceFormatError(f"trace file {path} is empty")
    return [cell.strip() for cell in rows[0]], rows[1:]


def _counts_from_columns(path: Path, rows: Sequence[Sequence[str]], first_index: int) -> list[float]:
    """Counts keyed by an integer index column; missing indices are zero-count steps."""
    by_index: dict[int, float] = {}
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise TraceFormatError(f"{path}:{line_no}: expected 2 columns, got {row!r}")
        try:
            index, count = int(row[0]), float(row[1])
        except ValueError:
            raise TraceFormatError(
                f"{path}:{line_no}: expected an integer and a count, got {row[:2]!r}"
            ) from None
        if index < first_index or not math.isfinite(count) or count < 0:
            raise TraceFormatError(
                f"{path}:{line_no}: bad index {index} or count {count} (index >= {first_index})"
            )
        by_index[index] = count
    if not by_index:
        raise TraceFormatError(f"{path}: no data rows")
    last = max(by_index)
    return [by_index.get(i, 0.0) for i in range(first_index, last + 1)]


def request_times_from_file(path: str | Path) -> npt.NDArray[np.float64]:
    """Arrival times (seconds from the first request, sorted) of a per-request ``TIMESTAMP,...`` trace."""
    path = Path(path)
    header, rows = _read_rows(path)
    if not header or header[0].upper() != "TIMESTAMP":
        raise TraceFormatError(f"{path}: expected a 'TIMESTAMP,...' header, got {header!r}")
    stamps: list[float] = []
    for line_no, row in enumerate(rows, start=2):
        if not row:
            continue
        text = row[0].strip()
        # Seven fractional digits (100 ns) are more than datetime parses: keep microseconds.
        head, dot, frac = text.partition(".")
        try:
            moment = datetime.fromisoformat(head + (dot + frac[:6] if dot else ""))
        except ValueError:
            raise TraceFormatError(f"{path}:{line_no}: cannot read timestamp {text!r}") from None
        stamps.append(moment.timestamp())
    if not stamps:
        raise TraceFormatError(f"{path}: no data rows")
    times = np.sort(np.asarray(stamps, dtype=np.float64))
    return np.asarray(times - times[0], dtype=np.float64)


def from_trace_file(
    path: str | Path,
    *,
    peak_qps: float | None = None,
    step_s: float | None = None,
    name: str | None = None,
) -> RateProfile:
    """A rate profile from one of the shared trace formats, rescaled so its peak is ``peak_qps``.

    Known formats (by header): ``minute,invocations`` (one step per minute, minutes from 1),
    ``second_offset,requests`` (one step per second, from 0), and ``TIMESTAMP,...`` (one row per
    request; binned into ``step_s``-second steps, 1 s by default). ``step_s`` re-grids the result.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    key = tuple(cell.lower() for cell in header[:2])
    if key == ("minute", "invocations"):
        profile = RateProfile(
            name or path.stem, 60.0, tuple(c / 60.0 for c in _counts_from_columns(path, rows, 1))
        )
    elif key == ("second_offset", "requests"):
        profile = RateProfile(name or path.stem, 1.0, tuple(_counts_from_columns(path, rows, 0)))
    elif header and header[0].upper() == "TIMESTAMP":
        bin_s = step_s or 1.0
        times = request_times_from_file(path)
        counts = np.bincount((times // bin_s).astype(np.int64))
        profile = RateProfile(name or path.stem, bin_s, tuple(float(c) / bin_s for c in counts))
    else:
        raise TraceFormatError(
            f"{path}: unknown trace format with header {header[:3]!r}; expected 'minute,invocations', "
            "'second_offset,requests' or 'TIMESTAMP,...'"
        )
    if step_s is not None and profile.step_s != step_s:
        profile = profile.resampled(step_s)
    return profile.scaled_to_peak(peak_qps) if peak_qps is not None else profile


def shared_trace(
    relative_path: str, *, peak_qps: float | None = None, step_s: float | None = None, name: str | None = None
) -> RateProfile:
    """``from_trace_file`` on a file under :func:`default_traces_dir` (e.g. ``AZURE_CODE_PER_SECOND``)."""
    return from_trace_file(default_traces_dir() / relative_path, peak_qps=peak_qps, step_s=step_s, name=name)


# --- Arrivals -------------------------------------------------------------------------------------


def arrival_times(profile: RateProfile, seed: int) -> npt.NDArray[np.float64]:
    """Sorted arrivals of a non-homogeneous Poisson process at ``profile``'s rate; same seed, same times.

    Piecewise constant rate → each step's count is Poisson(rate × step) and its arrivals are uniform
    within the step, which is exactly the Poisson process on that step.
    """
    rng = np.random.default_rng(seed)
    rates = profile.rates()
    counts = rng.poisson(rates * profile.step_s)
    starts = np.arange(len(rates), dtype=np.float64) * profile.step_s
    times = np.repeat(starts, counts) + rng.uniform(0.0, profile.step_s, int(counts.sum()))
    times.sort()
    return times
