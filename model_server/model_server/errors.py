"""Every failure the server can answer with, and the one table that maps it to an HTTP status.

The data plane raises these; the REST layer turns any of them into ``{"error": "..."}`` with the
status from :data:`HTTP_STATUS`. Anything else escaping a handler is a bug and answers 500.
"""

from __future__ import annotations

from typing import Final


class ServerError(Exception):
    """Base of the errors that reach a client; the message is what the client reads."""


class InvalidInput(ServerError):
    """The request is malformed or does not match the model's input tensors."""


class ModelNotFound(ServerError):
    """The path names a model this server does not serve."""


class PayloadTooLarge(ServerError):
    """The body exceeds the server's size limit."""


class Unavailable(ServerError):
    """Refused for now; the client may retry after ``retry_after_s`` seconds, possibly elsewhere."""

    retry_after_s: int = 1


class Overloaded(Unavailable):
    """The queue is full: shedding load fast keeps the latency of the accepted requests bounded."""


class Draining(Unavailable):
    """The server is shutting down and takes no new requests."""


class ModelFailure(ServerError):
    """The model raised while executing the batch that carried this request."""


HTTP_STATUS: Final[dict[type[ServerError], int]] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    Overloaded: 503,
    Draining: 503,
    Unavailable: 503,
    ModelFailure: 500,
    ServerError: 500,
}


def http_status(error: ServerError) -> int:
    """Status of the most specific class in :data:`HTTP_STATUS` that ``error`` is an instance of."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
