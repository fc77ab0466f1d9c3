"""Rate profiles, the real trace readers and Poisson arrivals (``model_server.loadgen.traces``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_server.loadgen import traces


def test_profile_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="step_s"):
        traces.RateProfile("x", 0.0, (1.0,))
    with pytest.raises(ValueError, match="empty"):
        traces.RateProfile("x", 1.0, ())
    with pytest.raises(ValueError, match=r"rates_qps\[1\]"):
        traces.RateProfile("x", 1.0, (1.0, -2.0))
    with pytest.raises(ValueError, match="all zeros"):
        traces.constant(0.0, 10).scaled_to_peak(5)


def test_rate_at_duration_and_rescaling() -> None:
    profile = traces.RateProfile("p", 2.0, (1.0, 4.0, 2.0))
    assert profile.duration_s == 6.0
    assert profile.rate_at(0.0) == 1.0
    assert profile.rate_at(3.9) == 4.0
    assert profile.rate_at(6.0) == 0.0
    assert profile.scaled_to_peak(100).rates_qps == (25.0, 100.0, 50.0)
    assert profile.time_scaled(0.5).duration_s == 3.0
    assert profile.expected_requests == pytest.approx(14.0)
    assert profile.window(2.0, 4.0).rates_qps == (4.0, 2.0)


def test_resampling_keeps_the_request_count() -> None:
    profile = traces.RateProfile("p", 1.0, tuple(float(i % 7) for i in range(120)))
    coarse = profile.resampled(10.0)
    assert coarse.step_s == 10.0
    assert len(coarse.rates_qps) == 12
    assert coarse.expected_requests == pytest.approx(profile.expected_requests)


def test_synthetic_shapes() -> None:
    step = traces.step(10, 50, at_s=5, duration_s=10)
    assert step.rates_qps[:5] == (10.0,) * 5
    assert step.rates_qps[5:] == (50.0,) * 5
    ramp = traces.ramp(0, 100, duration_s=10)
    assert list(ramp.rates_qps) == sorted(ramp.rates_qps)
    diurnal = traces.diurnal(10, 100, period_s=100, duration_s=100, step_s=1)
    assert min(diurnal.rates_qps) >= 10 - 1e-9
    assert max(diurnal.rates_qps) <= 100 + 1e-9
    assert int(np.argmax(diurnal.rates())) in (49, 50)
    bursty = traces.on_off(100, 0, on_s=2, off_s=3, duration_s=10)
    assert bursty.rates_qps == (0, 0, 0, 100, 100, 0, 0, 0, 100, 100)


def test_arrivals_are_deterministic_sorted_and_poisson() -> None:
    profile = traces.step(100, 400, at_s=50, duration_s=100)
    first = traces.arrival_times(profile, seed=7)
    assert np.array_equal(first, traces.arrival_times(profile, seed=7))
    assert not np.array_equal(first, traces.arrival_times(profile, seed=8))
    assert np.all(np.diff(first) >= 0)
    assert first[0] >= 0
    assert first[-1] < profile.duration_s
    # 5,000 then 20,000 expected: Poisson counts within 5 standard deviations.
    low = int(np.sum(first < 50))
    high = int(np.sum(first >= 50))
    assert abs(low - 5000) < 5 * 5000**0.5
    assert abs(high - 20000) < 5 * 20000**0.5
    gaps = np.diff(first[first >= 50])
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential gaps


def test_reads_the_shared_per_minute_trace() -> None:
    profile = traces.shared_trace(traces.AZURE_FUNCTIONS_PER_MINUTE)
    assert profile.step_s == 60.0
    assert len(profile.rates_qps) == 1440
    assert profile.peak_qps * 60 == pytest.approx(1611)  # the README's max
    assert profile.mean_qps * 60 == pytest.approx(692, abs=1)


def test_per_second_and_raw_timestamp_traces_agree() -> None:
    per_second = traces.shared_trace(traces.AZURE_CODE_PER_SECOND)
    raw = traces.shared_trace(traces.AZURE_CODE_REQUESTS)
    assert per_second.expected_requests == pytest.approx(8819)
    assert raw.expected_requests == pytest.approx(8819)
    assert per_second.rates_qps == raw.rates_qps
    times = traces.request_times_from_file(traces.default_traces_dir() / traces.AZURE_CODE_REQUESTS)
    assert times.size == 8819
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(3435.95, abs=0.1)
    scaled = traces.shared_trace(traces.AZURE_CODE_PER_SECOND, peak_qps=500.0, step_s=10.0)
    assert scaled.peak_qps == pytest.approx(500.0)
    assert scaled.step_s == 10.0


def test_bad_trace_files_get_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        traces.from_trace_file(missing)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("a,b\n1,2\n")
    with pytest.raises(traces.TraceFormatError, match="unknown trace format"):
        traces.from_trace_file(unknown)
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("minute,invocations\n1,10\n2,many\n")
    with pytest.raises(traces.TraceFormatError, match=r"garbled.csv:3"):
        traces.from_trace_file(garbled)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(traces.TraceFormatError, match="empty"):
        traces.from_trace_file(empty)
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("TIMESTAMP,x\n2023-11-16 18:17:03.9799600,1\nyesterday,2\n")
    with pytest.raises(traces.TraceFormatError, match="yesterday"):
        traces.from_trace_file(stamps)


def test_gaps_in_a_counts_file_are_idle_steps(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("second_offset,requests\n0,3\n4,1\n")
    assert traces.from_trace_file(sparse).rates_qps == (3.0, 0.0, 0.0, 0.0, 1.0)
