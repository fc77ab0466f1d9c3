"""Operator settings from environment and flags, and the ``plan`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slo_operator import settings
from slo_operator.cli import build_parser, main
from slo_operator.settings import OperatorConfig, SettingsError


def test_defaults_match_the_documented_values() -> None:
    config = OperatorConfig.from_env({})
    assert config.prometheus_url == "http://prometheus.monitoring.svc:9090"
    assert config.prometheus_timeout_seconds == 5.0
    assert config.default_interval_seconds == 15.0
    assert (config.metrics_port, config.health_port) == (8080, 8081)
    assert config.watch_namespaces == ()
    assert config.peering_name is None
    assert config.field_manager == "slo-autoscaler"
    assert config.log_level == "INFO"


def test_every_variable_is_read_and_flags_win() -> None:
    env = {
        settings.PROMETHEUS_URL: "https://prom:9091",
        settings.PROMETHEUS_BEARER_TOKEN_FILE: "/var/run/token",
        settings.PROMETHEUS_CA_FILE: "/var/run/ca.crt",
        settings.PROMETHEUS_TIMEOUT_SECONDS: "2.5",
        settings.WATCH_NAMESPACES: "ml, search ,",
        settings.DEFAULT_INTERVAL_SECONDS: "30",
        settings.METRICS_PORT: "9000",
        settings.HEALTH_PORT: "9001",
        settings.LOG_LEVEL: "debug",
        settings.PEERING_NAME: "slo-autoscaler",
        settings.FIELD_MANAGER: "my-manager",
    }
    assert set(env) == set(settings.ALL)
    config = OperatorConfig.from_env(env)
    assert config.watch_namespaces == ("ml", "search")
    assert config.prometheus_timeout_seconds == 2.5
    assert config.log_level == "DEBUG"
    assert config.peering_name == "slo-autoscaler"
    assert config.metrics_port == 9000
    args = build_parser().parse_args(
        ["run", "--prometheus-url", "http://flag:9090", "--watch-namespaces", "a"]
    )
    flagged = OperatorConfig.from_values(env, vars(args))
    assert flagged.prometheus_url == "http://flag:9090"
    assert flagged.watch_namespaces == ("a",)
    assert flagged.field_manager == "my-manager"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (settings.PROMETHEUS_URL, "prom:9090", "PROMETHEUS_URL"),
        (settings.METRICS_PORT, "eighty", "METRICS_PORT"),
        (settings.HEALTH_PORT, "70000", "HEALTH_PORT"),
        (settings.LOG_LEVEL, "LOUD", "LOG_LEVEL"),
        (settings.PROMETHEUS_TIMEOUT_SECONDS, "0", "PROMETHEUS_TIMEOUT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        OperatorConfig.from_env({variable: value})


def test_run_refuses_bad_settings_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(settings.METRICS_PORT, "not-a-port")
    assert main(["run"]) == 2
    assert "METRICS_PORT" in capsys.readouterr().err


def test_plan_answers_how_many_replicas(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("1: 0.004\n4: 0.0055\n16: 0.0115\n32: 0.0195\n")
    assert main(["plan", "--p99-ms", "100", "--qps", "2000", "--profile", str(profile), "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert main(["plan", "--p99-ms", "100", "--qps", "8000", "--profile", str(profile), "--json"]) == 0
    large = json.loads(capsys.readouterr().out)
    assert small["replicas"] >= 1
    assert large["replicas"] > small["replicas"]
    assert small["predictedP99Ms"] <= 100
    assert small["capacityQps"] >= 2000
    assert 1 <= small["maxBatchSize"] <= 64


def test_plan_says_when_the_target_cannot_be_met(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--p99-ms", "100", "--qps", "1000000", "--max-replicas", "2"]) == 3
    assert "targetQpsReachable: False" in capsys.readouterr().out


def test_plan_rejects_a_bad_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2]\n")
    assert main(["plan", "--p99-ms", "100", "--qps", "10", "--profile", str(bad)]) == 2
    assert "mapping of batch size" in capsys.readouterr().err
