"""``make demo QUICK=1`` end to end, as CI runs it, judged from the series it records.

Nothing is faked: ``python -m slo_demo --quick`` starts a real Prometheus, real model server
processes through the local actuator, runs the operator's own reader/policy/controller and the
project's load generator. The assertions read ``series.json`` and ``pids.txt`` from its out dir.

Bound stated for the step up (built-in quick profile: 10 s baseline, 40 s at x3, 40 s back down):
the client-side P99 must be back under the target, for 5 one-second intervals in a row, within
``RECOVERY_BOUND_S`` of the step — detection (a control step every 2 s over a 10 s window), a
cold start (about 3-7 s here), and draining the backlog that built up meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slo_demo.record import DemoRecord, step_milestones
from slo_operator.api import Reason

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECOVERY_BOUND_S = 35.0


def _started_pids(out_dir: Path) -> list[int]:
    path = out_dir / "pids.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _group_alive(pid: int) -> bool:
    """Each replica and Prometheus run in their own process group (pgid = pid)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _demo(out_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "slo_demo", "--quick", "--plain", "--out", str(out_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(300)
def test_quick_demo_scales_up_recovers_scales_down_and_loses_nothing(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo-out"
    demo = _demo(out_dir)
    try:
        output, _ = demo.communicate(timeout=280)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(60)
    assert demo.returncode == 0, output
    record = DemoRecord.read_json(out_dir / "series.json")
    steps = step_milestones(record)
    assert steps is not None
    story = f"{output}\nmilestones: {steps}"

    # The step up is answered with more replicas, and they become ready.
    assert steps.scaled_up_at_s is not None, story
    assert steps.peak_replicas > steps.replicas_before, story
    assert steps.ready_up_at_s is not None, story
    assert steps.ready_up_at_s < steps.step_down_s, story
    # P99 back under the target within the stated bound.
    assert steps.p99_recovered_at_s is not None, story
    assert steps.p99_recovered_at_s - steps.step_up_s <= RECOVERY_BOUND_S, story
    # The step down is answered with fewer replicas.
    assert steps.scaled_down_at_s is not None, story
    assert record.ticks[-1].ready_replicas < steps.peak_replicas, story
    # Not one request lost through every scale and batch-size change.
    assert record.sent > 3000, story
    assert record.failed == 0, story
    assert record.failures_by_kind == {}, story
    assert record.answered == record.sent, story
    assert sum(t.failed for t in record.ticks) == 0, story
    # Every removed replica drained and exited 0.
    exits = [e["detail"] for e in record.actuator_events if e["kind"] == "exited"]
    assert exits, record.actuator_events
    assert all(detail == "exit code 0" for detail in exits), exits
    # The decisions came from the operator's policy (its reasons), and the outputs exist.
    assert any(d.changed for d in record.decisions)
    assert any(e["reason"] == Reason.SCALED for e in record.kubernetes_events), record.kubernetes_events
    assert (out_dir / "demo.png").stat().st_size > 10_000
    assert "SLO attainment" in (out_dir / "report.md").read_text()
    for path in ("demo.png", "report.md", "series.json"):
        assert str(out_dir / path) in output
    # Every process it started is gone.
    pids = _started_pids(out_dir)
    assert len(pids) >= 3, pids  # Prometheus and at least two replicas
    assert [pid for pid in pids if _group_alive(pid)] == []


@pytest.mark.timeout(200)
def test_ctrl_c_mid_run_stops_every_process_it_started(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo-out"
    demo = _demo(out_dir)
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 120
        seen: list[str] = []
        for line in demo.stdout:  # until the load is running against a live replica
            seen.append(line)
            if "offered" in line or time.monotonic() > deadline:
                break
        assert any("offered" in line for line in seen), "".join(seen)
        pids = _started_pids(out_dir)
        assert len(pids) >= 2, pids
        assert all(_group_alive(pid) for pid in pids), pids
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
    assert demo.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert [pid for pid in _started_pids(out_dir) if _group_alive(pid)] == []
    record = DemoRecord.read_json(out_dir / "series.json")
    assert record.interrupted
