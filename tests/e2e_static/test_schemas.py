"""Every object the e2e setup sends to the API server is valid against Kubernetes' own schema.

The official client (v37) ships pydantic models of every built-in kind that forbid unknown fields,
so a typo (``portz:``), a wrong type or a misplaced key fails here, offline, instead of in kind.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_config import (
    AUTO_SERVICE,
    inference_service,
    load_job,
    prometheus_documents,
    service_url,
    setting,
)
from kubernetes import client

from slo_operator import api, kube


def model_of(document: dict[str, Any]) -> Any:
    """The client's model class for a built-in ``apiVersion``/``kind`` (V1Deployment, V1ClusterRole, ...)."""
    version = str(document["apiVersion"]).rsplit("/", 1)[-1]
    name = version[0].upper() + version[1:] + document["kind"]
    model = getattr(client, name, None)
    assert model is not None, f"no model {name} in the kubernetes client for {document['apiVersion']}"
    return model


def objects_sent_by_the_e2e_setup(rendered_chart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = api.InferenceServiceSpec.model_validate(inference_service()["spec"])
    namespace = setting("E2E_NAMESPACE")
    return [
        *prometheus_documents(),
        load_job("e2e-load", service_url(AUTO_SERVICE, namespace, 8080), 10.0, 20.0, 60),
        kube.build_deployment(AUTO_SERVICE, namespace, spec, replicas=1, max_batch_size=4),
        kube.build_service(AUTO_SERVICE, namespace, spec),
        *(doc for doc in rendered_chart if doc["kind"] != "CustomResourceDefinition"),
    ]


def test_every_object_validates_against_the_kubernetes_schema(rendered_chart: list[dict[str, Any]]) -> None:
    problems = []
    for document in objects_sent_by_the_e2e_setup(rendered_chart):
        try:
            model_of(document).model_validate(document)
        except Exception as error:
            problems.append(f"{document['kind']} {document['metadata'].get('name')}: {error}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_typo() -> None:
    [deployment] = [d for d in prometheus_documents() if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(ValueError, match="portz"):
        model_of(deployment).model_validate(deployment)
