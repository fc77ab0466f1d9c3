"""Load generation: arrival-rate profiles (:mod:`.traces`) and the open-loop HTTP generator.

Torch-free on purpose: the local demo, the e2e tests and the benchmark import it without the model.
See :mod:`model_server.loadgen.generator` for the library API.
"""

from model_server.loadgen import traces
from model_server.loadgen.generator import (
    IntervalStats,
    LoadSummary,
    Targets,
    fetch_request_body,
    request_body_from_metadata,
    run_load,
)

__all__ = [
    "IntervalStats",
    "LoadSummary",
    "Targets",
    "fetch_request_body",
    "request_body_from_metadata",
    "run_load",
    "traces",
]
