"""The embedded backend: a transformers model in this process, served by the continuous-batching engine.

Loading follows the trainer (`foveal.trainer.model.loading`): the same model classes, processor and
`tiny:` models, so the logprobs it returns are the ones the trainer recomputes. Requests are checked and
their images materialized in worker threads; only the engine thread runs the model.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from foveal.renderers.errors import UnknownFamily
from foveal.renderers.factory import build_renderer
from foveal.renderers.inference.wire import (
    Completion,
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
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.engine.requests import EngineRequest, EngineResult, TokenEvent, TokenStream
from foveal.trainer.serving.engine.runner import ModelRunner
from foveal.trainer.serving.engine.scheduler import Engine, EngineSettings
from foveal.trainer.serving.engine.sequences import Tracked
from foveal.trainer.serving.errors import invalid, too_long
from foveal.trainer.serving.refs import NO_IMAGES, RequestImages, decode_refs, materialize_images
from foveal.trainer.serving.weights import apply_update, matched_update, read_checkpoint
from foveal.trainer.model.loading import is_vision_model, load_model, load_processor, resolve_source


class TransformersBackend:
    """One model on one device (`[inference].device`), its renderer, and the engine that samples from it."""

    def __init__(self, config: ServeConfig, *, cache_root: Path | None = None) -> None:
        """`cache_root` is where `tiny:` models are built (default ~/.cache/foveal/tiny)."""
        self.config = config
        source = resolve_source(config.model.name_or_path, cache_root)
        self.device = _device(config.inference.device)
        self.model = load_model(config.model, source, self.device, training=False).eval()
        store = ImageStore.from_config(config.multimodal, config.logging.run_dir)
        self.renderer = build_renderer(source, config.renderer, store=store, multimodal=config.multimodal)
        self.tokenizer = self.renderer.tokenizer
        self.materializer = _materializer(config, source, store, self.renderer.adapter.layout_family)
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self.video_token_id: int | None = getattr(self.model.config, "video_token_id", None)
        placeholders = (self.renderer.image_token_id if self.materializer else None, self.video_token_id)
        self.placeholder_token_ids = tuple(token for token in placeholders if token is not None)
        self.stop_token_ids = _stop_token_ids(self.model, self.renderer.stop_token_ids)
        settings = EngineSettings(
            max_batch_size=config.inference.max_batch_size,
            request_timeout_s=config.inference.request_timeout_s,
            max_queued_requests=config.inference.max_queued_requests,
            prompt_cache_entries=config.inference.prompt_cache_entries,
            suppressed_token_ids=self.placeholder_token_ids,
        )
        self.engine = Engine(ModelRunner(self.model, self.device), self._decode, self.stop_token_ids, settings)
        self.engine.start()

    # -- data plane ---------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        return ServerInfo(
            model=self.config.model.name_or_path,
            family=self.renderer.family,
            backend="transformers",
            max_model_len=self.config.inference.max_model_len,
            weight_version=self.engine.weight_version,
            state=self.engine.state,
            image_token_id=self.renderer.image_token_id,
            stop_token_ids=self.stop_token_ids,
            layout_fingerprint=self.materializer.adapter.spec.fingerprint if self.materializer else None,
            served_model_names=self.config.inference.served_model_name,
        )

    def health(self) -> Health:
        return Health(state=self.engine.state, in_flight=self.engine.in_flight)

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        request_id = request.request_id or uuid.uuid4().hex
        prepared = await asyncio.to_thread(self._prepare, request, request_id)
        tracked = self.engine.submit(prepared)
        try:
            result = await asyncio.wrap_future(tracked.future)
        finally:
            tracked.cancel()  # a no-op once answered; frees the rows of a handler that stopped waiting
        return self._response(request, request_id, result)

    async def stream(self, request: GenerateRequest) -> TokenStream:
        """`generate`, token by token: each event as the engine samples it (the engine thread hands it over)."""
        prepared = await asyncio.to_thread(self._prepare, request, request.request_id or uuid.uuid4().hex)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | None] = asyncio.Queue()

        def hand_over(event: TokenEvent | None) -> None:
            if not loop.is_closed():  # the server is shutting down: nobody reads the events any more
                loop.call_soon_threadsafe(events.put_nowait, event)

        tracked = self.engine.submit(prepared, on_token=hand_over)
        tracked.future.add_done_callback(lambda _: hand_over(None))
        return _until_done(events, tracked)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        return TokenizeResponse(token_ids=tuple(self.tokenizer.encode(request.text, add_special_tokens=False)))

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self._check_ids(request.token_ids, "token_ids")
        return DetokenizeResponse(text=self._decode(request.token_ids))

    # -- control plane ------------------------------------------------------------------------------

    async def pause(self, mode: PauseMode) -> ControlResponse:
        await asyncio.wrap_future(self.engine.pause(mode))
        return self._control()

    async def resume(self) -> ControlResponse:
        await asyncio.wrap_future(self.engine.resume())
        return self._control()

    async def update_weights(self, request: UpdateWeightsRequest) -> ControlResponse:
        """Read and check the folder off the engine thread, then swap between two decode steps."""
        checkpoint = await asyncio.to_thread(read_checkpoint, Path(request.path))
        update = await asyncio.to_thread(matched_update, self.model, checkpoint)

        def swap() -> None:
            before = self.engine.state
            self.engine.set_state("updating")
            try:
                apply_update(self.model, update)
                self.engine.weight_version = request.version
                self.engine.prompt_cache.clear()  # prefills of the old weights
            finally:
                self.engine.set_state(before)

        await asyncio.wrap_future(self.engine.call(swap))
        return self._control()

    async def reset_prefix_cache(self) -> ControlResponse:
        await asyncio.wrap_future(self.engine.call(self.engine.prompt_cache.clear))
        return self._control()

    def close(self) -> None:
        self.engine.stop()

    # -- helpers ------------------------------------------------------------------------------------

    def _prepare(self, request: GenerateRequest, request_id: str) -> EngineRequest:
        """Check ids and length, materialize images (hash, fingerprint, placeholders), build the engine request."""
        self._check_ids(request.prompt_token_ids, "prompt_token_ids")
        if self.video_token_id is not None and self.video_token_id in request.prompt_token_ids:
            index = request.prompt_token_ids.index(self.video_token_id)
            raise invalid(f"prompt_token_ids[{index}]", "no video placeholder tokens (videos are not served)")
        self._check_length(len(request.prompt_token_ids), request.sampling.max_tokens)
        images = self._images(request)
        return EngineRequest(request_id, request.prompt_token_ids, request.sampling, images.pixel_kwargs, images.key)

    def _images(self, request: GenerateRequest) -> RequestImages:
        descriptors = decode_refs(request.image_refs)
        if descriptors and self.materializer is None:
            raise invalid("image_refs", f"no images: {self.config.model.name_or_path} is a text-only model")
        if self.materializer is None:
            return NO_IMAGES
        return materialize_images(request.prompt_token_ids, descriptors, self.materializer)

    def _check_ids(self, token_ids: Sequence[int], field: str) -> None:
        for index, token in enumerate(token_ids):
            if not 0 <= token < self.vocab_size:
                raise invalid(f"{field}[{index}]", f"a token id in [0, {self.vocab_size}) (got {token})")

    def _check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        limit = self.config.inference.max_model_len
        if prompt_tokens >= limit:
            raise too_long("prompt_token_ids", f"{prompt_tokens} tokens; the model takes fewer than {limit}")
        if prompt_tokens + max_tokens > limit:
            message = f"{max_tokens} after a {prompt_tokens}-token prompt exceeds max_model_len {limit}"
            raise too_long("sampling.max_tokens", message)

    def _response(self, request: GenerateRequest, request_id: str, result: EngineResult) -> GenerateResponse:
        completions = tuple(
            Completion(
                token_ids=sampled.token_ids,
                logprobs=sampled.logprobs if request.sampling.logprobs else None,
                top_logprobs=sampled.top_logprobs if request.sampling.top_logprobs else None,
                finish_reason=sampled.finish_reason,
                text=self._decode(sampled.token_ids),
            )
            for sampled in result.completions
        )
        return GenerateResponse(
            request_id=request_id,
            model=self.config.model.name_or_path,
            weight_version=result.weight_version,
            prompt_tokens=len(request.prompt_token_ids),
            completions=completions,
        )

    def _control(self) -> ControlResponse:
        return ControlResponse(
            state=self.engine.state, weight_version=self.engine.weight_version, in_flight=self.engine.in_flight
        )

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False)


async def _until_done(events: asyncio.Queue[TokenEvent | None], tracked: Tracked) -> TokenStream:
    """The events of `tracked` until its future settles, then its error if it failed; a reader that stops
    early (client gone) cancels the request so the engine frees its rows."""
    try:
        while (event := await events.get()) is not None:
            yield event
        tracked.future.result()
    finally:
        tracked.cancel()


def _device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _materializer(
    config: ServeConfig, source: str, store: ImageStore, layout_family: str | None
) -> Materializer | None:
    """The trainer's materializer bound to the served processor; None for text-only models."""
    if not is_vision_model(source, config.model.trust_remote_code):
        return None
    if layout_family is None:
        raise UnknownFamily("renderer.family", None, f"a family with an image layout for the vision model {source}")
    adapter = image_adapter(layout_family, load_processor(config.model, source), config.multimodal)
    return Materializer(adapter, store, missing_image_policy="error")


def _stop_token_ids(model: Any, renderer_stops: Sequence[int]) -> tuple[int, ...]:
    """The model's own end tokens (generation config) and the renderer's end-of-turn tokens."""
    eos = model.generation_config.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return tuple(dict.fromkeys([*eos_ids, *renderer_stops]))
