"""FastAPI routes of the Tinker-compatible API: exactly the endpoints tinker 0.38 calls, a thin layer over
`TinkerService`.

Every route requires the API key in `X-API-Key` (the header the SDK sends), compared in constant time.
The key is checked before any body is read (`RequestGate`: 401 from the headers alone, `/docs` and
`/openapi.json` are not served at all); bodies over `[tinker].max_request_bytes` (the datum and sampling calls) or
1 MiB (every other call) get 413 before any parsing; a bad request gets a 4xx `ErrorBody`
naming the field, and the server keeps serving. Called at `ServiceClient` construction: client/config,
client/dynamic_config, create_session; then session_heartbeat every 10 s and telemetry batches (accepted
and discarded: this service collects no telemetry).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from foveal.trainer.serving.app.errors import install_error_handlers
from foveal.trainer.serving.app.limits import SMALL_BODY_BYTES, Credential, RequestGate, RouteRule
from foveal.trainer.serving.errors import RequestError
from foveal.trainer.tinker_service import wire
from foveal.trainer.tinker_service.service import TinkerService

API_KEY_HEADER = "x-api-key"
PROTOBUF = "application/x-protobuf"


def api_key_guard(api_key: str):  # noqa: ANN201 - a FastAPI dependency
    expected = api_key.encode()

    def require(request: Request) -> None:
        given = request.headers.get(API_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            raise RequestError("unauthorized", 401, "a valid API key is required in X-API-Key", "X-API-Key")

    return require


LARGE_BODY_ROUTES = ("/api/v1/forward_backward", "/api/v1/asample")
"""The calls that carry datums or prompts (tokens, images): `[tinker].max_request_bytes`; the rest are small."""


def route_rules(api_key: str, max_request_bytes: int) -> dict[str, Any]:
    """`RequestGate`'s settings: the key on every path, checked before any body is read; per-route body caps."""
    key = Credential(API_KEY_HEADER, api_key, field="X-API-Key")
    large = [RouteRule(path, max_request_bytes, key) for path in LARGE_BODY_ROUTES]
    return {"rules": large, "default": RouteRule("/", min(SMALL_BODY_BYTES, max_request_bytes), key)}


def create_app(service: TinkerService, api_key: str) -> FastAPI:
    app = FastAPI(
        title="Foveal Tinker service", dependencies=[Depends(api_key_guard(api_key))],
        docs_url=None, redoc_url=None, openapi_url=None,  # the SDK needs none; nothing is served unauthenticated
    )  # fmt: skip
    install_error_handlers(app)
    rules = route_rules(api_key, service.section.max_request_bytes)
    app.add_middleware(RequestGate, **rules, body_timeout_s=service.section.http.body_timeout_s)
    chunk_bytes = service.section.max_request_bytes // 2

    @app.post("/api/v1/client/config")
    def client_config(request: wire.ClientConfigRequest) -> wire.ClientConfigResponse:
        return wire.ClientConfigResponse(fwdbwd_max_chunk_bytes_count=chunk_bytes)

    @app.post("/api/v1/client/dynamic_config")
    def dynamic_config(request: wire.ClientConfigRequest) -> wire.DynamicConfigResponse:
        return wire.DynamicConfigResponse()

    @app.post("/api/v1/create_session")
    def create_session(request: wire.CreateSessionRequest) -> wire.CreateSessionResponse:
        return service.create_session()

    @app.post("/api/v1/session_heartbeat")
    def session_heartbeat(request: wire.SessionHeartbeatRequest) -> wire.SessionHeartbeatResponse:
        return service.heartbeat(request.session_id)

    @app.post("/api/v1/sessions/{session_id}/finish", status_code=204)
    def finish_session(session_id: str, request: wire.FinishSessionRequest) -> Response:
        service.finish(session_id)
        return Response(status_code=204)

    @app.post("/api/v1/telemetry")
    def telemetry() -> wire.TelemetryResponse:
        return wire.TelemetryResponse()

    @app.get("/api/v1/healthz")
    def healthz() -> wire.HealthResponse:
        return wire.HealthResponse()

    @app.get("/api/v1/get_server_capabilities")
    def capabilities() -> wire.ServerCapabilities:
        return service.capabilities()

    @app.post("/api/v1/create_model")
    def create_model(request: wire.CreateModelRequest) -> wire.UntypedAPIFuture:
        return service.create_model(request)

    @app.post("/api/v1/get_info")
    def get_info(request: wire.GetInfoRequest) -> wire.GetInfoResponse:
        return service.info(request.model_id)

    @app.post("/api/v1/forward_backward")
    async def forward_backward(request: Request) -> wire.UntypedAPIFuture:
        if request.headers.get("content-encoding"):
            raise RequestError("invalid_request", 415, "Content-Encoding: none (bodies are not compressed)", "Content-Encoding")
        if request.headers.get("content-type", "").split(";")[0].strip() != PROTOBUF:
            raise RequestError("invalid_request", 415, f"Content-Type: {PROTOBUF}", "Content-Type")
        return await asyncio.to_thread(service.forward_backward, await request.body())

    @app.post("/api/v1/optim_step")
    def optim_step(request: wire.OptimStepRequest) -> wire.UntypedAPIFuture:
        return service.optim_step(request)

    @app.post("/api/v1/save_weights_for_sampler")
    def save_weights_for_sampler(request: wire.SaveWeightsForSamplerRequest) -> wire.UntypedAPIFuture:
        return service.save_for_sampler(request)

    @app.post("/api/v1/create_sampling_session")
    def create_sampling_session(request: wire.CreateSamplingSessionRequest) -> wire.CreateSamplingSessionResponse:
        return service.create_sampling_session(request)

    @app.get("/api/v1/samplers/{sampler_id}")
    def get_sampler(sampler_id: str) -> wire.GetSamplerResponse:
        return service.sampler(sampler_id)

    @app.post("/api/v1/asample")
    async def asample(request: wire.SampleRequest) -> wire.UntypedAPIFuture:
        return await service.asample(request)

    @app.post("/api/v1/retrieve_future")
    async def retrieve_future(request: wire.FutureRetrieveRequest) -> Response:
        payload = await service.futures.wait(request.request_id, service.section.future_wait_s)
        if payload is None:
            return JSONResponse(wire.TryAgainResponse(request_id=request.request_id).model_dump(mode="json"))
        if payload.proto is not None:
            return Response(payload.proto, media_type=PROTOBUF)
        if payload.json is not None:
            return JSONResponse(payload.json.model_dump(mode="json", exclude_none=True))
        category = "user" if payload.user_error else "server"
        failure = wire.RequestFailedResponse(error=payload.error or "failed", category=category)
        return JSONResponse(failure.model_dump(mode="json"))

    return app
