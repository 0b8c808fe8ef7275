"""The data plane: token-in/token-out generation, tokenization, server info and health."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from foveal.renderers.inference.wire import (
    DetokenizeRequest,
    DetokenizeResponse,
    Endpoints,
    GenerateRequest,
    GenerateResponse,
    Health,
    ServerInfo,
    TokenizeRequest,
    TokenizeResponse,
)
from foveal.trainer.serving.backends.base import InferenceBackend


def data_routes(backend: InferenceBackend, guard: Callable[[Request], None]) -> APIRouter:
    """Routes under /v1 (guarded by `guard`) and the unguarded /health."""
    router = APIRouter()
    guarded = APIRouter(dependencies=[Depends(guard)])

    @guarded.post(Endpoints.GENERATE)
    async def generate(request: GenerateRequest) -> GenerateResponse:
        return await backend.generate(request)

    @guarded.post(Endpoints.TOKENIZE)
    def tokenize(request: TokenizeRequest) -> TokenizeResponse:
        return backend.tokenize(request)

    @guarded.post(Endpoints.DETOKENIZE)
    def detokenize(request: DetokenizeRequest) -> DetokenizeResponse:
        return backend.detokenize(request)

    @guarded.get(Endpoints.INFO)
    def info() -> ServerInfo:
        return backend.info()

    @router.get(Endpoints.HEALTH)
    def health() -> Health:
        return backend.health()

    router.include_router(guarded)
    return router
