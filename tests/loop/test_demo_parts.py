"""The demo's pure parts, fast: manifest reading, traffic shapes, the Prometheus config, the summary
and step milestones computed from recorded series, and the plot and report written from them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from model_server.loadgen.traces import AZURE_CODE_PER_SECOND, default_traces_dir
from slo_demo.__main__ import build_parser
from slo_demo.manifest import DEFAULT_MANIFEST, ManifestError, load_manifest
from slo_demo.plot import plot_record
from slo_demo.profiles import STEP_LOAD_FRACTION, StepShape, calibrate, trace_traffic
from slo_demo.prometheus_server import scrape_config
from slo_demo.record import DecisionRow, DemoRecord, Tick, step_milestones, summarise
from slo_demo.report import summary_lines, write_report
from slo_demo.view import PlainView, RichView


def _tick(t: float, *, p99: float | None = 0.05, replicas: int = 1, ready: int | None = None) -> Tick:
    return Tick(
        t_s=t,
        offered_qps=10,
        sent_qps=10,
        achieved_qps=10,
        p99_s=p99,
        failed=0,
        replicas=replicas,
        ready_replicas=replicas if ready is None else ready,
        processes=replicas,
        max_batch_size=4,
    )


def _record() -> DemoRecord:
    """1 replica until 10 s; step up at 10 s, P99 over 0.2 s until 19 s; 2 replicas asked at 12 s,
    ready at 16 s; step down at 30 s; back to 1 at 36 s."""
    ticks = []
    for t in range(1, 41):
        replicas = 2 if 12 <= t < 36 else 1
        ready = 1 if t < 16 else replicas
        p99 = 1.5 if 11 <= t < 19 else 0.05
        ticks.append(_tick(float(t), p99=p99, replicas=replicas, ready=ready))
    ticks[24] = _tick(25.0, p99=0.9, replicas=2)  # one noisy second after recovery does not undo it
    return DemoRecord(
        target_p99_s=0.2,
        profile_name="test",
        phases={"step_up_s": 10.0, "step_down_s": 30.0},
        sizing={"cpus": 2},
        ticks=ticks,
        decisions=[
            DecisionRow(12.0, 2, 4, "scale 1→2", True, 0.9, 25.0),
            DecisionRow(14.0, 2, 4, "hold", False, 1.2, 30.0),
            DecisionRow(36.0, 1, 4, "scale 2→1", True, 0.05, 10.0),
        ],
        sent=400,
        answered=400,
    )


def test_the_demo_manifest_is_a_valid_inference_service_with_demo_pacing() -> None:
    service = load_manifest(DEFAULT_MANIFEST)
    spec = service.spec
    assert service.kind == "InferenceService"
    assert spec.model is not None
    assert spec.model.bundled_model
    assert spec.scaling.interval_seconds is not None
    assert spec.scaling.interval_seconds <= 3
    assert spec.prometheus.window_seconds <= 15
    assert spec.replicas.max == 2


def test_a_bad_manifest_names_the_file_and_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_MANIFEST.read_text())
    raw["spec"]["slo"]["p99LatencyMs"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match=r"bad\.yaml.*spec\.slo\.p99LatencyMs"):
        load_manifest(bad)
    del raw["spec"]["model"]
    raw["spec"]["slo"]["p99LatencyMs"] = 100
    raw["spec"]["scaleTargetRef"] = {"name": "existing"}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match=r"spec\.model is required"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "missing.yaml")


def test_the_builtin_shape_steps_up_by_the_factor_and_back() -> None:
    traffic = StepShape(factor=3, baseline_s=10, high_s=20, low_s=5).traffic(30)
    profile = traffic.profile
    assert traffic.phases == {"step_up_s": 10.0, "step_down_s": 30.0}
    assert profile.duration_s == 35
    assert profile.rate_at(9.5) == 30
    assert profile.rate_at(10.0) == 90
    assert profile.rate_at(29.9) == 90
    assert profile.rate_at(30.0) == 30


def test_rates_are_sized_from_the_start_up_profile_at_the_largest_allowed_batch() -> None:
    profile = {1: 0.012, 2: 0.0125, 4: 0.024, 8: 0.040}
    quiet = calibrate(profile, max_batch_size=4, factor=3)
    assert quiet.batch_size == 4
    assert quiet.replica_capacity_qps == pytest.approx(4 / 0.024)
    assert quiet.peak_qps == pytest.approx(3 * round(STEP_LOAD_FRACTION * (4 / 0.024) / 3))
    assert quiet.baseline_qps == round(STEP_LOAD_FRACTION * (4 / 0.024) / 3)
    busy = calibrate({k: 2 * v for k, v in profile.items()}, max_batch_size=4, factor=3)
    assert busy.peak_qps < quiet.peak_qps  # a busy machine gets a gentler step
    assert calibrate(profile, max_batch_size=4, factor=3, baseline_qps=10).peak_qps == 30
    with pytest.raises(ValueError, match="no batch size <= 0"):
        calibrate(profile, max_batch_size=0, factor=3)


def test_a_trace_is_squeezed_into_the_demo_length_at_the_step_peak() -> None:
    path = default_traces_dir() / AZURE_CODE_PER_SECOND  # ../shared/traces, present in CI too
    traffic = trace_traffic(path, peak_qps=105, duration_s=80)
    assert traffic.profile.step_s == 1.0
    assert traffic.profile.duration_s == pytest.approx(80, abs=1)
    assert traffic.profile.peak_qps == pytest.approx(105)
    assert traffic.phases == {}


def test_prometheus_scrapes_the_file_sd_targets_every_second(tmp_path: Path) -> None:
    config = scrape_config(tmp_path / "targets.json", scrape_interval_s=1.0)
    [job] = config["scrape_configs"]
    assert job["scrape_interval"] == "1000ms"
    assert job["file_sd_configs"] == [{"files": [str(tmp_path / "targets.json")], "refresh_interval": "1s"}]


def test_summary_counts_attainment_replica_seconds_and_events() -> None:
    summary = summarise(_record())
    assert summary.slo_attainment == pytest.approx(31 / 40)  # 8 slow seconds + the noisy one
    assert summary.controller_slo_attainment == pytest.approx(1 / 3)
    assert summary.replica_seconds == pytest.approx(1 * 16 + 2 * 24)
    assert summary.scale_events == 2
    assert summary.peak_replicas == 2
    assert summary.batch_changes == 0


def test_step_milestones_from_the_series() -> None:
    steps = step_milestones(_record())
    assert steps is not None
    assert steps.replicas_before == 1
    assert steps.peak_replicas == 2
    assert steps.scaled_up_at_s == 12.0
    assert steps.ready_up_at_s == 16.0
    assert steps.p99_recovered_at_s == 19.0
    assert steps.scaled_down_at_s == 36.0
    no_step = _record()
    no_step.phases = {}
    assert step_milestones(no_step) is None


def test_plot_report_and_json_round_trip(tmp_path: Path) -> None:
    record = _record()
    record.write_json(tmp_path / "series.json")
    again = DemoRecord.read_json(tmp_path / "series.json")
    assert again == record
    assert json.loads((tmp_path / "series.json").read_text())["ticks"][0]["t_s"] == 1.0
    plot = plot_record(again, tmp_path / "demo.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = write_report(again, summarise(again), tmp_path / "report.md", plot).read_text()
    assert "![the run](demo.png)" in report
    assert "| 12 | 2 | 4 |" in report
    lines = summary_lines(again, summarise(again))
    assert any(line.startswith("requests: sent 400, answered 400, failed 0") for line in lines)
    assert any("more replicas asked +2 s, ready +6 s" in line for line in lines)


def test_cli_defaults() -> None:
    arguments = build_parser().parse_args(["--quick"])
    assert arguments.quick
    assert arguments.profile == "builtin"
    assert arguments.out == Path("demo-out")
    assert arguments.manifest == DEFAULT_MANIFEST


def test_views_show_the_state_and_every_acting_decision(capsys: pytest.CaptureFixture[str]) -> None:
    record = _record()
    plain = PlainView(record.target_p99_s, every_s=5.0)
    for tick in record.ticks[:6]:
        plain.tick(tick)
    plain.decision(record.decisions[0])
    plain.decision(record.decisions[1])  # a hold: not printed
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # ticks at 1 s and 6 s, one decision
    assert "replicas 1/1" in lines[0]
    assert "target 200 ms" in lines[0]
    assert "decision ACT  replicas=2 batch=4" in lines[2]
    assert "scale 1→2" in lines[2]

    rich_view = RichView(record.target_p99_s, "demo")
    rich_view.tick(record.ticks[20])
    rich_view.decision(record.decisions[0])
    screen = io.StringIO()
    Console(file=screen, width=80).print(rich_view._render())
    text = screen.getvalue()
    assert "replicas 2/2" in text
    assert "max batch 4" in text
    assert "last decision: scale 1→2" in text
