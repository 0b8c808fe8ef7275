"""The data plane: token-in/token-out generation, tokenization, server info and health."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from foveal.renderers.inference.openai import ModelCard, ModelList
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
    """Routes under /v1 (guarded by `guard`: generate, tokenize, detokenize, info, models) and the unguarded /health."""
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

    @guarded.get(Endpoints.MODELS)
    def models() -> ModelList:
        return model_list(backend.info())

    @router.get(Endpoints.HEALTH)
    def health() -> Health:
        return backend.health()

    router.include_router(guarded)
    return router


def model_list(info: ServerInfo) -> ModelList:
    """`GET /v1/models` of a server (or of the router, from an upstream's info): the names it answers to."""
    created = int(time.time())
    return ModelList(data=tuple(ModelCard(id=name, created=created) for name in info.model_names()))
