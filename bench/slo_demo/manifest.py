"""Read the demo's InferenceService manifest with the operator's own API models."""

from __future__ import annotations

from pathlib import Path

import pydantic
import yaml

from slo_operator.api import InferenceService

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "demo-local.yaml"


class ManifestError(ValueError):
    """The manifest cannot drive the demo; the message names the file and the field."""


def load_manifest(path: Path) -> InferenceService:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{path}: not YAML: {error}") from None
    try:
        service = InferenceService.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise ManifestError(f"{path}: not a valid InferenceService: {problems}") from None
    if service.spec.model is None:
        raise ManifestError(
            f"{path}: spec.model is required: the demo starts bundled model servers "
            "(spec.scaleTargetRef names a Deployment, which only exists in a cluster)"
        )
    if service.spec.model.model_path is not None:
        raise ManifestError(f"{path}: spec.model.modelPath is not supported by the demo; use bundledModel")
    return service
