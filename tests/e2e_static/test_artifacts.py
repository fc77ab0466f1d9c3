"""The failure path of the e2e tests: dumping artifacts never raises, even with the cluster gone.

A dump runs when a test has already failed; if it raised in turn, the report would show the
dump's error instead of the test's. Checked against an API server address where nothing listens.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from e2e_cluster import ARTIFACTS_ATTRIBUTE, Cluster, artifacts_on_error, dump_artifacts
from kubernetes import client


@pytest.fixture
def unreachable_cluster() -> Cluster:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    return Cluster.of(client.ApiClient(configuration))


def test_dump_writes_every_part_with_the_reason_it_could_not_be_collected(
    unreachable_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no kind: `kind export logs` is skipped
    dump_artifacts(unreachable_cluster, tmp_path / "dump")
    names = {p.name for p in (tmp_path / "dump").iterdir()}
    expected = {"inferenceservices.yaml", "deployments.yaml", "services.yaml", "jobs.yaml", "pods.yaml"}
    assert expected | {"prometheus-targets.json"} <= names
    assert any(name.startswith("events-") for name in names)
    text = (tmp_path / "dump" / "deployments.yaml").read_text()
    assert text.startswith("could not collect deployments.yaml:")


def test_artifacts_on_error_dumps_once_and_reraises_the_tests_own_error(
    unreachable_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("e2e_cluster.ARTIFACTS_DIR", tmp_path)
    with (
        pytest.raises(AssertionError, match="the test's own failure") as failure,
        artifacts_on_error(unreachable_cluster, "outer"),
        artifacts_on_error(unreachable_cluster, "inner"),
    ):
        raise AssertionError("the test's own failure")
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 1, folders
    assert folders[0].startswith("inner-"), "the innermost layer dumps, before any cleanup"
    assert getattr(failure.value, ARTIFACTS_ATTRIBUTE) == tmp_path / folders[0]
