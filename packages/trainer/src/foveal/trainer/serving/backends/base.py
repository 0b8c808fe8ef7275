"""The interface every inference backend offers the HTTP layer (`foveal.trainer.serving.app`).

The app is a thin translation between HTTP and this protocol, so the embedded transformers backend and
the vLLM backend serve the same API with the same errors. Methods raise `RequestError`, `ContractError`
(image refs), `BadCheckpoint` (weight updates) or `EngineError` (aborted, unavailable, overloaded); the
app turns each into its `ErrorBody`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from foveal.renderers.inference.wire import (
    ControlResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    GenerateRequest,
    GenerateResponse,
    Health,
    PauseMode,
    ServerInfo,
    TokenizeRequest,
    TokenizeResponse,
    UpdateWeightsRequest,
)
from foveal.renderers.rendering import Renderer
from foveal.trainer.serving.engine.requests import TokenStream


class InferenceBackend(Protocol):
    """A served model: data plane (generate, tokenize), control plane (pause, weights), and its renderer."""

    renderer: Renderer
    """Renders chat messages for `/v1/chat/completions` (images through the server's store)."""

    def info(self) -> ServerInfo: ...

    def health(self) -> Health: ...

    async def generate(self, request: GenerateRequest) -> GenerateResponse: ...

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse: ...

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse: ...

    async def pause(self, mode: PauseMode) -> ControlResponse: ...

    async def resume(self) -> ControlResponse: ...

    async def update_weights(self, request: UpdateWeightsRequest) -> ControlResponse: ...

    async def reset_prefix_cache(self) -> ControlResponse: ...

    def close(self) -> None:
        """Stop serving: requests still waiting fail as unavailable."""
        ...


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that hands out tokens as they are sampled (the transformers backend); for the others the app
    streams the finished completions."""

    async def stream(self, request: GenerateRequest) -> TokenStream:
        """Check and queue `request` (raising as `generate` does), then return its tokens as they come; the
        iterator raises the engine's error if the request fails later."""
        ...
