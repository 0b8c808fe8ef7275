"""Typed failures of a call to an inference server or router, as the client raises them."""

from __future__ import annotations

from typing import get_args

from foveal.renderers.inference.openai import ErrorResponse
from foveal.renderers.inference.wire import ErrorBody, ErrorCode

_CODE_BY_STATUS: dict[int, ErrorCode] = {
    400: "invalid_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found", 413: "too_long",
    422: "invalid_request", 429: "overloaded", 503: "unavailable",
}  # fmt: skip


class InferenceError(Exception):
    """A call that failed: `status` is the HTTP status (None when no answer arrived), `code` an ErrorCode,
    `field` the dotted name of the offending input when the server named one. `endpoint` is redacted."""

    def __init__(
        self,
        endpoint: str,
        status: int | None,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.attempts = attempts
        super().__init__(str(self))

    def __str__(self) -> str:
        answer = "no answer" if self.status is None else f"HTTP {self.status}"
        field = f" (field {self.field!r})" if self.field else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.endpoint}: {answer} {self.code}{field}: {self.message}{tries}"

    def after(self, attempts: int) -> InferenceError:
        """The same failure, recording how many attempts were made."""
        return type(self)(self.endpoint, self.status, self.code, self.message, self.field, attempts)


class InferenceTimeout(InferenceError):
    """No (complete) answer within the client's timeout; not retried, since the server may still be working."""


def error_from_answer(endpoint: str, status: int, body: bytes) -> InferenceError:
    """The InferenceError of a 4xx/5xx answer (an `ErrorBody`, or OpenAI's error shape from the OpenAI routes and
    other OpenAI-compatible servers); a body that is neither still gets a code by status."""
    by_status: ErrorCode = _CODE_BY_STATUS.get(status, "internal" if status >= 500 else "invalid_request")
    try:
        detail = ErrorBody.model_validate_json(body).error
    except ValueError:
        pass  # not Foveal's own shape: maybe OpenAI's
    else:
        return InferenceError(endpoint, status, detail.code, detail.message, detail.field)
    try:
        error = ErrorResponse.model_validate_json(body).error
    except ValueError:
        return InferenceError(endpoint, status, by_status, f"answer without an error body ({len(body)} bytes)")
    code = error.code if error.code in get_args(ErrorCode) else by_status
    return InferenceError(endpoint, status, code, error.message, error.param)  # type: ignore[arg-type]
