"""The operator-wide kopf settings chosen at startup (peering, posting, persistence) and own metrics."""

from __future__ import annotations

import logging
import urllib.request

import kopf
import pytest
from kubernetes.aio import client as kclient

from slo_operator import handlers
from slo_operator import metrics as operator_metrics
from slo_operator.settings import OperatorConfig

from .conftest import free_port


@pytest.mark.parametrize(("peering_name", "standalone"), [(None, True), ("slo-autoscaler", False)])
async def test_startup_configures_kopf(peering_name: str | None, standalone: bool) -> None:
    settings = kopf.OperatorSettings()
    reader = object()
    memo = kopf.Memo(
        config=OperatorConfig(peering_name=peering_name, metrics_port=0),
        kube_configuration=kclient.Configuration(host="http://127.0.0.1:1"),
        reader=reader,
    )
    await handlers.configure(settings=settings, memo=memo, logger=logging.getLogger("test"))
    try:
        assert settings.peering.standalone is standalone
        if peering_name:
            assert settings.peering.name == peering_name
            assert settings.peering.mandatory is True
        assert settings.posting.level == logging.WARNING  # only our events and warnings are posted
        assert memo.reader is reader  # an injected reader is kept; otherwise one is built
        assert not memo.closing.is_set()
    finally:
        await memo.api_client.close()


def test_operator_metrics_are_served() -> None:
    port = free_port()
    operator_metrics.serve(port, address="127.0.0.1")
    operator_metrics.DECISIONS.labels("ns", "svc", "applied").inc()
    operator_metrics.RECONCILE_DURATION.observe(0.02)
    operator_metrics.PROMETHEUS_ERRORS.labels("ns", "svc").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'slo_autoscaler_decisions_total{inferenceservice="svc",namespace="ns",outcome="applied"}' in text
    assert "slo_autoscaler_reconcile_duration_seconds_bucket" in text
    assert "slo_autoscaler_prometheus_errors_total" in text
