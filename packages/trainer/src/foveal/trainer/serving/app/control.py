"""The control plane: pause, resume, weight updates and cache reset, every route behind the bearer token."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from foveal.renderers.inference.wire import ControlResponse, Endpoints, PauseRequest, UpdateWeightsRequest
from foveal.trainer.serving.backends.base import InferenceBackend


def control_routes(backend: InferenceBackend, guard: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)])

    @router.post(Endpoints.PAUSE)
    async def pause(request: PauseRequest) -> ControlResponse:
        return await backend.pause(request.mode)

    @router.post(Endpoints.RESUME)
    async def resume() -> ControlResponse:
        return await backend.resume()

    @router.post(Endpoints.UPDATE_WEIGHTS)
    async def update_weights(request: UpdateWeightsRequest) -> ControlResponse:
        return await backend.update_weights(request)

    @router.post(Endpoints.RESET_PREFIX_CACHE)
    async def reset_prefix_cache() -> ControlResponse:
        return await backend.reset_prefix_cache()

    return router
