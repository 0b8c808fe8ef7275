"""Every failure becomes an `ErrorBody` with a wire code, an HTTP status and the offending field.

Contract errors (image refs, messages) keep their `http_status`; request, checkpoint and engine errors
carry theirs. Anything unexpected is a 500 `internal` whose details go to the log, not to the client.
On the OpenAI routes (`OPENAI_PATHS`) the same failure is answered in OpenAI's shape (`ErrorResponse`: the
field is `param`, the wire code is `code`), and what is a 422 elsewhere (a request that does not validate) is
a 400 there, as OpenAI answers it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from foveal.renderers.errors import ContractError, MissingAsset
from foveal.renderers.inference.openai import OPENAI_PATHS, ErrorResponse, openai_error
from foveal.renderers.inference.wire import ErrorBody, ErrorCode, ErrorDetail
from foveal.renderers.messages import InvalidMessage
from foveal.trainer.serving.engine.requests import EngineError
from foveal.trainer.serving.errors import RequestError
from foveal.trainer.serving.weights import BadCheckpoint

log = logging.getLogger(__name__)
_STATUS_CODES: dict[int, ErrorCode] = {401: "unauthorized", 404: "not_found", 413: "too_long", 429: "overloaded"}


def error_response(
    code: ErrorCode, status: int, message: str, field: str | None = None, *, path: str = ""
) -> JSONResponse:
    """The answer to a failed request for `path`: OpenAI's error shape on the OpenAI routes, `ErrorBody` elsewhere."""
    if path in OPENAI_PATHS:
        status = 400 if status == 422 else status
        body: ErrorBody | ErrorResponse = openai_error(status, code, message, field)
    else:
        body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(ContractError, _contract_error)
    app.add_exception_handler(BadCheckpoint, _bad_checkpoint)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _request_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestError)
    return error_response(error.code, error.status, str(error), error.field, path=request.url.path)


async def _contract_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ContractError)
    code: ErrorCode = "invalid_request" if isinstance(error, InvalidMessage) else "invalid_ref"
    if isinstance(error, MissingAsset):
        code = "not_found"
    return error_response(code, error.http_status, str(error), error.field, path=request.url.path)


async def _bad_checkpoint(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BadCheckpoint)
    return error_response("invalid_request", error.http_status, str(error), error.field, path=request.url.path)


async def _engine_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, EngineError)
    if error.code == "internal":
        log.error("request failed inside the engine: %s", error)
    message = str(error) or error.code
    return error_response(error.code, error.http_status, message, path=request.url.path)  # type: ignore[arg-type]


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    status = 400 if first["type"] == "json_invalid" else 422
    return error_response("invalid_request", status, f"{field}: {first['msg']}", field, path=request.url.path)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = _STATUS_CODES.get(error.status_code, "invalid_request")
    return error_response(code, error.status_code, str(error.detail), path=request.url.path)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return error_response("internal", 500, f"internal error ({type(error).__name__})", path=request.url.path)
