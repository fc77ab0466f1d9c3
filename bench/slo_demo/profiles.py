"""The demo's traffic: the built-in step profile, or a real trace squeezed into the demo's length.

Both are ``RateProfile`` values from the load generator's ``traces`` module, so the demo, the
simulator and the load generator replay load the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model_server.loadgen.traces import RateProfile, from_trace_file


@dataclass(frozen=True)
class DemoTraffic:
    profile: RateProfile
    phases: dict[str, float]
    """Named instants (seconds) to mark on the plot and to check in the loop test."""


STEP_LOAD_FRACTION = 0.8
"""The step's peak as a fraction of what one replica executes per second (its start-up profile at the
largest allowed batch). 80 %: with the policy's 20 % headroom that is more than one replica's capacity
within the target (about 90 % of saturation), so the plan alone asks for a second replica; in practice
one replica, beside Prometheus and the load generator, falls behind and P99 crosses the target; two
replicas run at 40 % each, which leaves room for a noisy machine."""


@dataclass(frozen=True)
class Calibration:
    """The demo's rates, sized from the first replica's measured start-up profile."""

    batch_size: int
    batch_duration_s: float
    replica_capacity_qps: float
    peak_qps: float
    baseline_qps: float

    def line(self) -> str:
        return (
            f"one replica executes {self.batch_size} rows in {self.batch_duration_s * 1000:.1f} ms "
            f"(start-up profile) = {self.replica_capacity_qps:.0f} qps; "
            f"baseline {self.baseline_qps:.0f} qps, "
            f"peak {self.peak_qps:.0f} qps ({STEP_LOAD_FRACTION:.0%} of one replica, "
            f"{STEP_LOAD_FRACTION / 2:.0%} of two)"
        )


def calibrate(
    profile: Mapping[int, float], *, max_batch_size: int, factor: float, baseline_qps: float | None = None
) -> Calibration:
    """Rates for this machine as it is now: a busy machine gets a gentler step than an idle one."""
    usable = [size for size in profile if size <= max_batch_size and profile[size] > 0]
    if not usable:
        raise ValueError(f"the start-up profile {dict(profile)} has no batch size <= {max_batch_size}")
    batch = max(usable)
    capacity = batch / profile[batch]
    if baseline_qps is None:
        baseline_qps = max(1.0, round(STEP_LOAD_FRACTION * capacity / factor))
    return Calibration(batch, profile[batch], capacity, baseline_qps * factor, baseline_qps)


@dataclass(frozen=True)
class StepShape:
    """Baseline, a step up by ``factor``, a hold, a step down back to baseline."""

    factor: float
    baseline_s: float
    high_s: float
    low_s: float

    @property
    def duration_s(self) -> float:
        return self.baseline_s + self.high_s + self.low_s

    def traffic(self, baseline_qps: float) -> DemoTraffic:
        high = baseline_qps * self.factor
        seconds = [baseline_qps] * round(self.baseline_s)
        seconds += [high] * round(self.high_s)
        seconds += [baseline_qps] * round(self.low_s)
        step_up = float(round(self.baseline_s))
        step_down = step_up + round(self.high_s)
        return DemoTraffic(
            RateProfile(f"built-in step x{self.factor:g}", 1.0, tuple(seconds)),
            {"step_up_s": step_up, "step_down_s": step_down},
        )


def trace_traffic(path: Path, *, peak_qps: float, duration_s: float) -> DemoTraffic:
    """A trace file in any format the simulator reads, stretched or squeezed to ``duration_s``.

    Only the shape is kept: the steps are re-gridded to 1 s (averaging) and the peak set to
    ``peak_qps``, the rate the built-in profile steps up to.
    """
    raw = from_trace_file(path)
    squeezed = raw.time_scaled(duration_s / raw.duration_s).resampled(1.0).scaled_to_peak(peak_qps)
    return DemoTraffic(squeezed, {})
