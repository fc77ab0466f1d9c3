"""The e2e scenario's own inputs: the InferenceService, the load Job, the load sizing, the summary parser."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from e2e_config import (
    AUTO_SERVICE,
    DELETE_SERVICE,
    DRY_RUN_LOAD_DURATION_S,
    DRY_RUN_SERVICE,
    INFERENCESERVICE_MANIFEST,
    LOAD_DURATION_S,
    LOAD_JOB_MANIFEST,
    LOAD_QPS_RANGE,
    inference_service,
    load_job,
    load_job_args,
    load_single,
    parse_load_summary,
    replica_capacity_qps,
    scale_out_load_qps,
    served_model_name,
    service_url,
    setting,
)

from model_server.loadgen.__main__ import build_parser, profile_from_args
from slo_operator import api, validation

VARIANTS = [(AUTO_SERVICE, "Auto"), (DRY_RUN_SERVICE, "DryRun"), (DELETE_SERVICE, "Auto")]


# --- the InferenceService --------------------------------------------------------------------------


def test_inferenceservice_manifest_is_the_operators_kind_in_the_e2e_namespace() -> None:
    manifest = load_single(INFERENCESERVICE_MANIFEST)
    assert manifest["apiVersion"] == api.API_VERSION
    assert manifest["kind"] == api.KIND
    assert manifest["metadata"]["namespace"] == setting("E2E_NAMESPACE")
    assert manifest["metadata"]["name"] == AUTO_SERVICE


def test_inferenceservice_runs_the_image_loaded_into_kind() -> None:
    model = load_single(INFERENCESERVICE_MANIFEST)["spec"]["model"]
    assert model["image"] == setting("MODEL_SERVER_IMAGE")
    assert model["imagePullPolicy"] in ("Never", "IfNotPresent"), "a loaded image must not be pulled"


def test_inferenceservice_bounds_fit_a_small_runner() -> None:
    spec = api.InferenceServiceSpec.model_validate(load_single(INFERENCESERVICE_MANIFEST)["spec"])
    assert spec.replicas.min == 1, "the scale-out assertion starts from one replica"
    assert 2 <= spec.replicas.max <= 3, "each replica may use a core of a 2-4 core CI runner"
    assert spec.slo.target_qps is None, "a targetQps would scale out without load and prove nothing"
    assert spec.scaling.scale_down_stabilization_seconds <= 60, "scale-in must fit the test's wait"
    assert spec.scaling.interval_seconds is not None
    assert spec.scaling.interval_seconds <= 15


@pytest.mark.parametrize(("name", "mode"), VARIANTS)
def test_every_variant_the_tests_apply_passes_offline_validation(
    name: str, mode: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(inference_service(name, mode)))
    assert validation.validate_files([path]) == []


def test_the_operator_cli_validates_the_e2e_manifests(tmp_path: Path) -> None:
    """`python -m slo_operator validate FILE…`, the documented check: accepts them, refuses a broken one."""
    paths = []
    for name, mode in VARIANTS:
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(inference_service(name, mode)))
    command = [sys.executable, "-m", "slo_operator", "validate"]
    good = subprocess.run(
        [*command, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    assert good.returncode == 0, good.stdout + good.stderr

    broken = inference_service("e2e-broken", "Auto")
    broken["spec"]["batching"]["maxBatchDelayMs"] = broken["spec"]["slo"]["p99LatencyMs"]
    bad_path = tmp_path / "broken.yaml"
    bad_path.write_text(yaml.safe_dump(broken))
    bad = subprocess.run([*command, str(bad_path)], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "maxBatchDelayMs" in bad.stdout + bad.stderr


# --- the load Job ----------------------------------------------------------------------------------


def example_job() -> dict[str, Any]:
    url = service_url(AUTO_SERVICE, setting("E2E_NAMESPACE"), 8080)
    return load_job("e2e-load-auto", url, 61.7, 123.4, LOAD_DURATION_S)


def test_load_job_is_a_one_shot_job_of_the_model_server_image() -> None:
    job = example_job()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["namespace"] == setting("E2E_NAMESPACE")
    assert job["spec"]["backoffLimit"] == 0, "a retried load run would hide its failed requests"
    assert job["spec"]["activeDeadlineSeconds"] > max(LOAD_DURATION_S, DRY_RUN_LOAD_DURATION_S) + 60
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["image"] == setting("MODEL_SERVER_IMAGE")
    assert container["imagePullPolicy"] in ("Never", "IfNotPresent")
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_load_job_command_is_the_load_generators_real_entry_point() -> None:
    [container] = example_job()["spec"]["template"]["spec"]["containers"]
    python, flag, module = container["command"]
    assert (python, flag) == ("python", "-m")
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_load_job_args_parse_with_the_load_generators_own_parser() -> None:
    job = example_job()
    args = build_parser().parse_args(load_job_args(job))
    profile = profile_from_args(args)
    assert args.url == [service_url(AUTO_SERVICE, setting("E2E_NAMESPACE"), 8080)]
    assert args.model == served_model_name(inference_service())
    assert (args.qps, args.ramp_to) == (pytest.approx(61.7), pytest.approx(123.4))
    assert args.duration == LOAD_DURATION_S
    assert profile.duration_s == pytest.approx(LOAD_DURATION_S)
    assert (
        profile.rate_at(0.0) < profile.rate_at(LOAD_DURATION_S / 2) < profile.rate_at(LOAD_DURATION_S - 1e-6)
    )
    assert args.json, "the test parses the --json summary line"
    assert not any("{" in arg for arg in load_job_args(job)), "a placeholder was left unfilled"


def test_load_job_template_has_exactly_the_placeholders_load_job_fills() -> None:
    [container] = load_single(LOAD_JOB_MANIFEST)["spec"]["template"]["spec"]["containers"]
    placeholders = {arg for arg in container["args"] if "{" in str(arg)}
    assert placeholders == {"{target}", "{model}", "{start_qps}", "{peak_qps}", "{duration_s}"}


# --- sizing the load from the measured profile -------------------------------------------------------


def test_capacity_is_the_best_rate_within_the_batch_bound() -> None:
    profile = {1: 0.010, 2: 0.012, 4: 0.020, 8: 0.030}
    assert replica_capacity_qps(profile, 4) == pytest.approx(200.0)
    assert replica_capacity_qps(profile, 8) == pytest.approx(8 / 0.030)


def test_scale_out_load_exceeds_one_replica_and_fits_the_bounds() -> None:
    rate = scale_out_load_qps({1: 0.010, 2: 0.016}, max_batch_size=4, max_replicas=3)
    assert 125.0 < rate < 3 * 125.0


@pytest.mark.parametrize(
    ("profile", "max_replicas", "problem"),
    [
        ({1: 0.001}, 3, "more than one loadgen pod offers"),
        ({1: 0.5}, 1, "more than replicas.max=1"),
        ({8: 0.01}, 3, "no batch size <= 4"),
    ],
)
def test_load_sizing_refuses_scenarios_that_cannot_show_scaling(
    profile: dict[int, float], max_replicas: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        scale_out_load_qps(profile, max_batch_size=4, max_replicas=max_replicas)


def test_load_range_is_what_one_loadgen_pod_offers() -> None:
    low, high = LOAD_QPS_RANGE
    assert 0 < low < high <= 1000


# --- the summary the test parses, produced by the real load generator --------------------------------


async def test_summary_parser_reads_the_real_load_generators_json_line() -> None:
    """The real loadgen CLI against a stand-in server (the model server itself needs torch and seconds to
    start; what is checked here is the loadgen's output format), which fails every fourth request."""
    calls = 0

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": request.match_info["name"],
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
            }
        )

    async def infer(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls % 4 == 0:
            return web.json_response({"error": "overloaded"}, status=503)
        return web.json_response(
            {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}
        )

    app = web.Application()
    app.router.add_get("/v2/models/{name}", metadata)
    app.router.add_post("/v2/models/{name}/infer", infer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        job = load_job("parse-check", f"http://127.0.0.1:{port}", 40.0, 40.0, 2)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "model_server.loadgen",
            *load_job_args(job),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        await runner.cleanup()
    log = stdout.decode()
    assert process.returncode == 0, log + stderr.decode()
    summary = parse_load_summary(log)
    assert summary.sent == calls > 0
    assert summary.failed == calls // 4
    assert summary.errors == {"http_503": calls // 4}
    assert summary.ok == calls - calls // 4
    assert summary.p99_ms >= 0


def test_summary_parser_says_what_the_log_ended_with_when_there_is_no_summary() -> None:
    with pytest.raises(ValueError, match=r"(?s)no JSON summary line.*connection refused"):
        parse_load_summary("starting\nconnection refused\n")


def test_summary_parser_names_a_missing_field() -> None:
    with pytest.raises(ValueError, match="'errors'"):
        parse_load_summary(json.dumps({"sent": 1, "ok": 1, "achieved_qps": 1.0, "p99_ms": 2.0}))
