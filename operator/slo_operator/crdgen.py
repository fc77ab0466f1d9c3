"""Generate the InferenceService CRD from the pydantic models: ``python -m slo_operator.crdgen``.

pydantic emits JSON Schema 2020-12; the apiserver wants a *structural* OpenAPI v3 subset:
no ``$ref``, no ``anyOf`` for optional fields, boolean ``exclusiveMinimum``, a type on every
node. This module does that translation and nothing else, so ``crds/`` never drifts from
``api.py`` (a test regenerates it and compares).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from slo_operator import api

_DROPPED_KEYS = frozenset({"title", "$defs"})


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and collapse ``anyOf: [X, null]`` into X, keeping the outer description/default."""
    outer = {key: value for key, value in node.items() if key not in ("$ref", "anyOf", "allOf")}
    inner: dict[str, Any] = {}
    if "$ref" in node:
        inner = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
    elif "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node["allOf"][0], defs)
    elif "anyOf" in node:
        choices = [choice for choice in node["anyOf"] if choice.get("type") != "null"]
        if len(choices) != 1:
            raise ValueError(f"not expressible as a structural schema: anyOf {node['anyOf']!r}")
        inner = _resolve(choices[0], defs)
    merged = {**inner, **outer}
    if merged.get("default", ...) is None:
        del merged["default"]
    return merged


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            required = set(node.get("required", ()))
            props = {}
            for name, prop in value.items():
                nullable = any(choice.get("type") == "null" for choice in prop.get("anyOf", ()))
                converted = _structural(prop, defs)
                if (
                    name not in required
                    and not nullable
                    and "default" not in converted
                    and converted.get("type") == "object"
                    and "properties" in converted
                ):
                    converted["default"] = {}  # so the apiserver applies the nested defaults
                props[name] = converted
            out["properties"] = props
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _structural(value, defs)
        elif key == "additionalProperties" and value is False:
            continue  # extra="forbid": structural schemas prune unknown fields instead
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if "type" not in out:
        raise ValueError(f"schema node without a type: {dict(node)!r}")
    return out


def _check_descriptions(node: Mapping[str, Any], path: str) -> None:
    for name, prop in node.get("properties", {}).items():
        if not prop.get("description"):
            raise ValueError(f"field {path}.{name} has no description: kubectl explain would be empty")
        _check_descriptions(prop, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        _check_descriptions(node["items"], f"{path}[]")


def structural_schema(model: type[api._ApiModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one API model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    _check_descriptions(schema, model.__name__)
    return schema


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    spec_schema = structural_schema(api.InferenceServiceSpec)
    status_schema = structural_schema(api.InferenceServiceStatus)
    conditions = status_schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    env = spec_schema["properties"]["model"]["properties"]["env"]
    env["x-kubernetes-list-type"] = "map"
    env["x-kubernetes-list-map-keys"] = ["name"]
    root = {
        "type": "object",
        "description": (api.InferenceService.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        dict(column) for column in api.InferenceService.PRINTER_COLUMNS
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = (
    "# GENERATED by `make crds` (python -m slo_operator.crdgen) from operator/slo_operator/api.py.\n"
    "# Do not edit by hand: change the pydantic models and regenerate.\n"
)


def render() -> str:
    """The CRD file's exact text."""
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the InferenceService CRD from the API models.")
    parser.add_argument("--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
