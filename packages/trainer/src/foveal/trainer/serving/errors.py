"""Request errors the server answers with a 4xx/5xx `ErrorBody`, for failures outside the image contract.

Contract failures keep their own classes (`foveal.renderers.errors`, each with its `http_status`) and
engine failures theirs (`engine.requests`); the HTTP layer maps all three families to wire error codes.
"""

from __future__ import annotations

from foveal.renderers.inference.wire import ErrorCode


class RequestError(ValueError):
    """A bad request: `code` and `status` for the answer, `field` the dotted name of the offending input."""

    def __init__(self, code: ErrorCode, status: int, message: str, field: str | None = None) -> None:
        self.code: ErrorCode = code
        self.status = status
        self.field = field
        super().__init__(message)


def invalid(field: str, message: str) -> RequestError:
    return RequestError("invalid_request", 400, f"{field}: {message}", field)


def too_long(field: str, message: str) -> RequestError:
    return RequestError("too_long", 400, f"{field}: {message}", field)
