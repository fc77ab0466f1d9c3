"""Operator-wide settings, from the environment and from flags of ``python -m slo_operator run``.

The environment variable names are an interface (the Helm chart sets them): they live here,
once, as constants. A flag, when given, wins over its variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Final

PROMETHEUS_URL: Final = "PROMETHEUS_URL"
PROMETHEUS_BEARER_TOKEN_FILE: Final = "PROMETHEUS_BEARER_TOKEN_FILE"
PROMETHEUS_CA_FILE: Final = "PROMETHEUS_CA_FILE"
PROMETHEUS_TIMEOUT_SECONDS: Final = "PROMETHEUS_TIMEOUT_SECONDS"
WATCH_NAMESPACES: Final = "WATCH_NAMESPACES"
DEFAULT_INTERVAL_SECONDS: Final = "DEFAULT_INTERVAL_SECONDS"
METRICS_PORT: Final = "METRICS_PORT"
HEALTH_PORT: Final = "HEALTH_PORT"
LOG_LEVEL: Final = "LOG_LEVEL"
PEERING_NAME: Final = "PEERING_NAME"
FIELD_MANAGER: Final = "FIELD_MANAGER"

ALL: Final[tuple[str, ...]] = (
    PROMETHEUS_URL,
    PROMETHEUS_BEARER_TOKEN_FILE,
    PROMETHEUS_CA_FILE,
    PROMETHEUS_TIMEOUT_SECONDS,
    WATCH_NAMESPACES,
    DEFAULT_INTERVAL_SECONDS,
    METRICS_PORT,
    HEALTH_PORT,
    LOG_LEVEL,
    PEERING_NAME,
    FIELD_MANAGER,
)

_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting has a value the operator cannot run with; the message names the variable."""


@dataclass(frozen=True)
class OperatorConfig:
    """Every operator-wide knob. Field names map to the variables above (upper-cased)."""

    prometheus_url: str = "http://prometheus.monitoring.svc:9090"
    prometheus_bearer_token_file: str | None = None
    prometheus_ca_file: str | None = None
    prometheus_timeout_seconds: float = 5.0
    watch_namespaces: tuple[str, ...] = field(default=())
    """Empty: every namespace (cluster-wide)."""
    default_interval_seconds: float = 15.0
    metrics_port: int = 8080
    """0 turns the operator's own /metrics endpoint off."""
    health_port: int = 8081
    """0 turns the /healthz liveness endpoint off."""
    log_level: str = "INFO"
    peering_name: str | None = None
    """None: standalone. Set: kopf peering, so two replicas never both act."""
    field_manager: str = "slo-autoscaler"

    def __post_init__(self) -> None:
        if not self.prometheus_url.startswith(("http://", "https://")):
            raise SettingsError(f"{PROMETHEUS_URL} must be an http(s) URL, got {self.prometheus_url!r}")
        if self.prometheus_timeout_seconds <= 0:
            raise SettingsError(f"{PROMETHEUS_TIMEOUT_SECONDS} must be > 0")
        if self.default_interval_seconds <= 0:
            raise SettingsError(f"{DEFAULT_INTERVAL_SECONDS} must be > 0")
        for name, port in ((METRICS_PORT, self.metrics_port), (HEALTH_PORT, self.health_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name} must be a port number (0 to disable), got {port}")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(
                f"{LOG_LEVEL} must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}"
            )
        if not self.field_manager or len(self.field_manager) > 100:
            raise SettingsError(f"{FIELD_MANAGER} must be 1 to 100 characters")

    @property
    def children_field_manager(self) -> str:
        """Manager of the owned Deployment's template, apart from the two knobs the scaler owns."""
        return f"{self.field_manager}-children"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        return cls.from_values(os.environ if environ is None else environ, {})

    @classmethod
    def from_values(cls, environ: Mapping[str, str], flags: Mapping[str, object]) -> OperatorConfig:
        """Flags (non-None) win over the environment, which wins over the defaults."""
        values: dict[str, object] = {}
        for spec in fields(cls):
            variable = spec.name.upper()
            flag = flags.get(spec.name)
            raw: object = flag if flag is not None else environ.get(variable, "").strip() or None
            if raw is None:
                continue
            try:
                values[spec.name] = _convert(spec.name, raw)
            except ValueError as error:
                raise SettingsError(f"{variable}: {error}") from None
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, raw: object) -> object:
    if name == "watch_namespaces":
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(item.strip() for item in items if str(item).strip())
    if name in ("metrics_port", "health_port"):
        return int(str(raw))
    if name in ("prometheus_timeout_seconds", "default_interval_seconds"):
        return float(str(raw))
    if name == "log_level":
        return str(raw).upper()
    return str(raw)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; each defaults to None so the environment decides when it is absent."""
    for spec in fields(OperatorConfig):
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"(env {spec.name.upper()}; default {spec.default!r})"
        if spec.name == "watch_namespaces":
            parser.add_argument(
                flag, default=None, help=f"comma-separated namespaces; empty = all {help_text}"
            )
        else:
            parser.add_argument(flag, default=None, help=help_text)
