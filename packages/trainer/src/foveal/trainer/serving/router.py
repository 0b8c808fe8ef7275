"""The router's HTTP layer: one address in front of many inference servers.

Data plane (`/v1/*`): the body is forwarded untouched to one server (sticky by `X-Session-ID`, else
least loaded; failover in `fleet.py`) and the server's answer is returned as is; an event stream
(`stream: true`) is relayed chunk by chunk as the server sends it, never buffered. On the OpenAI routes
the router's own errors take OpenAI's shape, as the servers' do. Control plane
(`/control/*`): checked here, then sent to every server. The router answers `/v1/info` itself
(backend "router") and `/health` (200 while at least one server is up).

Security: every control call needs the bearer token (compared in constant time); when a token is
configured, data-plane calls need it too. No upstream URL is ever built from the request (Host header,
path or body): upstreams come from the config only. Bodies are JSON, capped in size; nothing is pickled.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, SecretStr, ValidationError

from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.renderers.inference.errors import InferenceError
from foveal.renderers.inference.openai import COMPLETIONS_PATH, OPENAI_PATHS, openai_error
from foveal.renderers.inference.wire import (
    SESSION_HEADER,
    ControlResponse,
    Endpoints,
    ErrorBody,
    Health,
    PauseRequest,
    ServerInfo,
    ServerState,
    UpdateWeightsRequest,
)
from foveal.trainer.serving.app.data import model_list
from foveal.trainer.serving.app.limits import CONTROL_BODY_BYTES
from foveal.trainer.serving.fleet import (
    Fleet,
    Forwarded,
    WantedState,
    error_answer,
    pause_wanted,
    resume_wanted,
    weights_wanted,
)

ModelT = TypeVar("ModelT", bound=BaseModel)
ControlCall = Callable[[RemoteInferenceClient], Awaitable[ControlResponse]]
DATA_PLANE = (
    Endpoints.GENERATE, Endpoints.CHAT_COMPLETIONS, COMPLETIONS_PATH, Endpoints.TOKENIZE, Endpoints.DETOKENIZE,
)  # fmt: skip
MAX_SESSION_ID_CHARS = 256


class RejectedRequest(Exception):
    """A request the router answers itself with a 4xx, before any server sees it."""

    def __init__(self, answer: Forwarded) -> None:
        self.answer = answer
        super().__init__(answer.content.decode())


def create_router_app(fleet: Fleet, api_token: SecretStr | None, max_request_bytes: int) -> FastAPI:
    """The router app; its lifespan starts the fleet's health checks and stops them on shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await fleet.start()
        try:
            yield
        finally:
            await fleet.stop()

    app = FastAPI(title="foveal router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    control_bytes = min(CONTROL_BODY_BYTES, max_request_bytes)  # control bodies are a mode, a path, a version

    @app.exception_handler(RejectedRequest)
    async def _rejected(request: Request, error: RejectedRequest) -> Response:
        return respond(error.answer, request.url.path)

    def proxy(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def forward(request: Request) -> Response:
            if api_token is not None:
                authorize(request, api_token)
            session_id = session_of(request)
            body = await read_capped(request, max_request_bytes)
            return respond(await fleet.forward(path, body, session_id), path)

        return forward

    for path in DATA_PLANE:
        app.add_api_route(path, proxy(path), methods=["POST"])

    async def from_info(request: Request, answer: Callable[[ServerInfo], BaseModel]) -> Response:
        """An answer made from an upstream's `/v1/info` (data token checked first)."""
        if api_token is not None:
            authorize(request, api_token)
        try:
            return json_answer(answer(await fleet.info()))
        except InferenceError as error:
            return failure(error, request.url.path)

    @app.get(Endpoints.INFO)
    async def info(request: Request) -> Response:
        return await from_info(request, lambda served: served)

    @app.get(Endpoints.MODELS)
    async def models(request: Request) -> Response:
        return await from_info(request, model_list)

    @app.get(Endpoints.HEALTH)
    async def health() -> Response:
        healthy = fleet.table.healthy()
        if not healthy or not fleet.watching():
            why = "no inference server is up" if healthy == [] else "the router's health checks stopped"
            return respond(error_answer(503, "unavailable", why))
        state: ServerState = "serving" if fleet.wanted.pause is None else "paused"
        return json_answer(Health(state=state, in_flight=fleet.table.in_flight()))

    async def control(call: ControlCall, wanted: Callable[[WantedState], WantedState]) -> Response:
        try:
            return json_answer(await fleet.control(call, wanted))
        except InferenceError as error:
            return failure(error)

    @app.post(Endpoints.PAUSE)
    async def pause(request: Request) -> Response:
        authorize(request, api_token)
        body = await parse(request, PauseRequest, control_bytes)
        return await control(lambda client: client.pause(body.mode), pause_wanted(body.mode))

    @app.post(Endpoints.RESUME)
    async def resume(request: Request) -> Response:
        authorize(request, api_token)
        return await control(lambda client: client.resume(), resume_wanted)

    @app.post(Endpoints.UPDATE_WEIGHTS)
    async def update_weights(request: Request) -> Response:
        authorize(request, api_token)
        body = await parse(request, UpdateWeightsRequest, control_bytes)
        call = lambda client: client.update_weights(body.path, body.version)  # noqa: E731
        return await control(call, weights_wanted(body))

    @app.post(Endpoints.RESET_PREFIX_CACHE)
    async def reset_prefix_cache(request: Request) -> Response:
        authorize(request, api_token)
        return await control(lambda client: client.reset_prefix_cache(), lambda wanted: wanted)

    return app


def authorize(request: Request, api_token: SecretStr | None) -> None:
    """Check `Authorization: Bearer <token>` in constant time; without a configured token nothing passes."""
    if api_token is None:
        raise RejectedRequest(error_answer(401, "unauthorized", "control is disabled: the router has no api_token"))
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    expected = api_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise RejectedRequest(error_answer(401, "unauthorized", "a valid bearer token is required"))


def session_of(request: Request) -> str | None:
    session_id = request.headers.get(SESSION_HEADER)
    if session_id is not None and not (0 < len(session_id) <= MAX_SESSION_ID_CHARS and session_id.isprintable()):
        message = f"expected 1-{MAX_SESSION_ID_CHARS} printable characters, got {len(session_id)} characters"
        raise RejectedRequest(error_answer(400, "invalid_request", message, SESSION_HEADER))
    return session_id


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (before it is all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RejectedRequest(error_answer(413, "too_long", f"the body exceeds {limit} bytes", "body"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RejectedRequest(error_answer(413, "too_long", f"the body exceeds {limit} bytes", "body"))
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[ModelT], limit: int) -> ModelT:
    """A control body as its wire model; a bad one is a 422 naming the first offending field."""
    body = await read_capped(request, limit)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        first = error.errors(include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise RejectedRequest(error_answer(422, "invalid_request", first["msg"], field)) from None


def failure(error: InferenceError, path: str = "") -> Response:
    """An upstream's (or the fleet's) failure as this router's answer, naming the server that failed."""
    message = f"{error.endpoint}: {error.message}"
    return respond(error_answer(error.status or 503, error.code, message, error.field), path)


def json_answer(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def respond(answer: Forwarded, path: str = "") -> Response:
    """`answer` as the router's response: an event stream relayed as it comes; on an OpenAI route, an error of
    the router's own (an `ErrorBody`) in OpenAI's shape (the servers' errors there have it already)."""
    if answer.events is not None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(answer.events, answer.status, headers, media_type=answer.media_type)
    content = answer.content
    if path in OPENAI_PATHS and answer.status >= 400:
        content = _openai_shaped(answer.status, content)
    return Response(content, status_code=answer.status, media_type=answer.media_type)


def _openai_shaped(status: int, content: bytes) -> bytes:
    try:
        detail = ErrorBody.model_validate_json(content).error
    except ValidationError:
        return content  # already OpenAI's shape (a server's answer), or not an error body at all
    return openai_error(status, detail.code, detail.message, detail.field).model_dump_json().encode()
