"""Offline validation of InferenceService manifests: the same models and CEL rules the cluster enforces.

The apiserver defaults an object, checks it against the OpenAPI schema, then evaluates the
``x-kubernetes-validations`` CEL rules. We do the same in that order: pydantic defaults and
checks types, bounds and enums; then every CEL rule of the generated CRD is evaluated with
``cel-python`` against the defaulted object, with ``number`` fields as doubles (as in the cluster).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import pydantic
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from slo_operator import api, crdgen


@dataclass(frozen=True)
class Problem:
    """One reason a manifest would be refused."""

    source: str
    """File (or other origin) of the manifest."""
    object_name: str
    """``namespace/name`` of the object, or ``#index`` when it has no name."""
    field: str
    """Dotted path of the offending field (``spec`` for object-wide rules)."""
    rule: str
    """What was broken: a schema constraint or the CEL rule's message."""

    def __str__(self) -> str:
        return f"{self.source}: {self.object_name}: {self.field}: {self.rule}"


@dataclass(frozen=True)
class _CompiledRule:
    rule: str
    message: str
    field_path: str | None
    program: Any


def _compile(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the schema with each CEL rule compiled once."""
    env = celpy.Environment()
    out: dict[str, Any] = {key: value for key, value in schema.items() if key != "properties"}
    rules = []
    for entry in schema.get(api.CEL_RULES_KEY, ()):
        program = env.program(env.compile(entry["rule"]))
        rules.append(_CompiledRule(entry["rule"], entry["message"], entry.get("fieldPath"), program))
    out["_rules"] = rules
    if "properties" in schema:
        out["properties"] = {name: _compile(prop) for name, prop in schema["properties"].items()}
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _compile(schema["items"])
    if isinstance(schema.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _compile(schema["additionalProperties"])
    return out


@cache
def _spec_schema() -> dict[str, Any]:
    crd = crdgen.build_crd()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return _compile(root["properties"]["spec"])


def _as_cel_json(value: Any, schema: Mapping[str, Any]) -> Any:
    """JSON as the apiserver hands it to CEL: ``number`` fields are doubles even when written as 1."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            key: _as_cel_json(item, props.get(key, extra if isinstance(extra, Mapping) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_as_cel_json(item, items) for item in value]
    return value


def _cel_problems(value: Any, schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    for rule in schema.get("_rules", ()):
        activation = {"self": json_to_cel(_as_cel_json(value, schema))}
        try:
            ok = rule.program.evaluate(activation)
        except CELEvalError as error:
            yield path, f"CEL rule {rule.rule!r} could not be evaluated: {error.args[0]}"
            continue
        if not ok:
            where = path + (rule.field_path or "")
            yield where, f"{rule.message} (CEL: {rule.rule})"
    if isinstance(value, Mapping):
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                yield from _cel_problems(value[name], prop, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _cel_problems(item, schema["items"], f"{path}[{index}]")


def cel_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, rule) for every CEL rule of the CRD that a *defaulted* spec breaks."""
    return list(_cel_problems(spec, _spec_schema(), "spec"))


def _field_of(location: Iterable[int | str]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(object)"


def validate_object(obj: Any, *, source: str, index: int) -> list[Problem]:
    """Every problem of one manifest object; objects of other kinds are not ours to judge."""
    if not isinstance(obj, Mapping):
        return [Problem(source, f"#{index}", "(object)", "not a mapping")]
    if obj.get("kind") != api.KIND or not str(obj.get("apiVersion", "")).startswith(f"{api.GROUP}/"):
        return []
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    object_name = f"{meta.get('namespace', 'default')}/{name}" if name else f"#{index}"
    try:
        service = api.InferenceService.model_validate(obj)
    except pydantic.ValidationError as error:
        return [
            Problem(source, object_name, _field_of(err["loc"]), err["msg"])
            for err in error.errors(include_url=False)
        ]
    defaulted = service.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [Problem(source, object_name, field, rule) for field, rule in cel_problems(defaulted)]


def validate_text(text: str, *, source: str) -> list[Problem]:
    """Every problem in a (multi-document) YAML text."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        return [Problem(source, "-", "(yaml)", str(error).replace("\n", " "))]
    problems: list[Problem] = []
    for index, document in enumerate(documents):
        items = (
            document.get("items", []) if isinstance(document, Mapping) and "items" in document else [document]
        )
        for item in items:
            problems.extend(validate_object(item, source=source, index=index))
    return problems


def validate_files(paths: Iterable[Path]) -> list[Problem]:
    problems: list[Problem] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            problems.append(Problem(str(path), "-", "(file)", error.strerror or str(error)))
            continue
        problems.extend(validate_text(text, source=str(path)))
    return problems
