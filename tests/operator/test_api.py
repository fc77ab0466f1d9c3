"""The API models, the generated CRD (up to date, structural, described) and its CEL rules, offline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slo_operator import api, crdgen
from slo_operator.cli import main
from slo_operator.validation import cel_problems, validate_text

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "inferenceservice.yaml"
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


def good_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "slo": {"p99LatencyMs": 100, "targetQps": 500},
        "replicas": {"min": 1, "max": 4},
        "batching": {"minBatchSize": 1, "maxBatchSize": 32, "maxBatchDelayMs": 5},
        "model": {"image": "registry.example/model-server:1", "bundledModel": "mlp"},
    }
    spec.update(overrides)
    return spec


def manifest(spec: dict[str, Any], name: str = "svc") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }
    )


def defaulted(spec: dict[str, Any]) -> dict[str, Any]:
    return api.InferenceServiceSpec.model_validate(spec).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )


def test_crd_file_is_up_to_date_with_the_models() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == crdgen.render(), "run `make crds` and commit the result"


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, prop in node.get("properties", {}).items():
        found.extend(walk(prop, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        found.extend(walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(walk(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_crd_schema_is_structural_and_described() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    assert crd["spec"]["group"] == "slo-autoscaler.io"
    assert crd["spec"]["names"]["shortNames"] == ["sloisvc"]
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Mode", "Replicas", "Batch", "P99", "Target", "QPS", "SLO met", "Age"]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        # Structural: a type everywhere, no $ref/anyOf/allOf/oneOf, no additionalProperties beside properties.
        assert "type" in node, path
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "$defs", "title", "const"):
            assert forbidden not in node, (path, forbidden)
        assert not ("properties" in node and "additionalProperties" in node), path
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path
        if path.startswith((".spec", ".status")) and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path} has no description"
    spec = root["properties"]["spec"]["properties"]
    assert spec["scaling"]["properties"]["mode"]["enum"] == ["Auto", "DryRun", "Off"]
    assert spec["replicas"]["default"] == {}  # nested defaults apply when the block is omitted
    assert spec["replicas"]["properties"]["min"]["default"] == 1
    assert spec["model"]["properties"]["env"]["x-kubernetes-list-type"] == "map"
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    rules = [v["rule"] for _, n in walk(root) for v in n.get("x-kubernetes-validations", [])]
    assert "self.min <= self.max" in rules
    assert "has(self.model) != has(self.scaleTargetRef)" in rules


def test_crdgen_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "crds" / "isvc.yaml"
    assert crdgen.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == crdgen.render()


def test_good_spec_passes_every_cel_rule() -> None:
    assert cel_problems(defaulted(good_spec())) == []


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"replicas": {"min": 5, "max": 2}}, "spec.replicas", "replicas.min must be <= replicas.max"),
        (
            {"batching": {"minBatchSize": 64, "maxBatchSize": 8}},
            "spec.batching",
            "minBatchSize must be <= batching.maxBatchSize",
        ),
        ({"scaleTargetRef": {"name": "existing"}}, "spec", "exactly one of model"),
        ({"model": None}, "spec", "exactly one of model"),
        (
            {"slo": {"p99LatencyMs": 5}, "batching": {"maxBatchDelayMs": 5}},
            "spec.batching.maxBatchDelayMs",
            "below slo.p99LatencyMs",
        ),
        (
            {"model": {"image": "x", "bundledModel": "mlp", "modelPath": "/m.pt"}},
            "spec.model",
            "at most one of model.bundledModel and model.modelPath",
        ),
        (
            {"model": {"image": "x", "env": [{"name": "MAX_BATCH_SIZE", "value": "8"}]}},
            "spec.model.env",
            "operator owns it",
        ),
    ],
)
def test_bad_specs_break_the_named_cel_rule(change: dict[str, Any], field: str, fragment: str) -> None:
    spec = copy.deepcopy(good_spec())
    for key, value in change.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    problems = cel_problems(defaulted(spec))
    assert any(where == field and fragment in rule for where, rule in problems), problems


def test_number_fields_are_doubles_for_cel_even_when_written_as_integers() -> None:
    """The apiserver hands ``type: number`` to CEL as double; 100 (int) vs 5.0 must compare."""
    spec = defaulted(good_spec(slo={"p99LatencyMs": 100}, batching={"maxBatchDelayMs": 5}))
    assert isinstance(spec["slo"]["p99LatencyMs"], float | int)
    assert cel_problems(spec) == []


def test_validate_reports_file_object_field_and_rule() -> None:
    text = (
        manifest(good_spec(replicas={"min": 9, "max": 2}), name="bad") + "---\n" + manifest(good_spec(), "ok")
    )
    problems = validate_text(text, source="svc.yaml")
    assert [str(p) for p in problems] == [
        "svc.yaml: ns/bad: spec.replicas: replicas.min must be <= replicas.max (CEL: self.min <= self.max)"
    ]


def test_validate_reports_schema_errors_with_their_field() -> None:
    problems = validate_text(manifest(good_spec(replicas={"min": 1, "max": 0}, sclaing={})), source="f.yaml")
    fields = {p.field for p in problems}
    assert "spec.replicas.max" in fields
    assert "spec.sclaing" in fields  # a typo is an error, not silently pruned


def test_validate_ignores_other_kinds_and_flags_bad_yaml() -> None:
    other = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    assert validate_text(other, source="cm.yaml") == []
    (problem,) = validate_text("a: [unclosed", source="broken.yaml")
    assert problem.field == "(yaml)"


def test_validate_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(manifest(good_spec()))
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest(good_spec(batching={"minBatchSize": 16, "maxBatchSize": 4})))
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"{bad}: ns/svc: spec.batching: ")
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    assert validate_text(example.read_text(encoding="utf-8"), source=str(example)) == []


def test_examples_cover_bundled_model_and_scale_target_ref() -> None:
    kinds = set()
    for example in EXAMPLES:
        for doc in yaml.safe_load_all(example.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == api.KIND:
                kinds.add("model" if "model" in doc["spec"] else "scaleTargetRef")
    assert kinds == {"model", "scaleTargetRef"}
