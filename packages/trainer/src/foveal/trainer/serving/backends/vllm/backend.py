"""The vLLM backend: the served model runs in vLLM's engine (its own processes, CUDA) behind our HTTP API.

This process keeps what gives requests their meaning: the renderer and tokenizer, the image checks
(`mm_inputs`), the served checkpoint's layout (`weight_layout`), the weight version and the pause
state. Checked prompts are rendered by vLLM's own input renderer (which runs its image processor and
expands each image's placeholder) and must come out as the request's exact tokens before anything is
sampled. vLLM's `AsyncLLM` client is the boundary to the engine processes: rendered inputs go in, final
`RequestOutput`s come back, and control calls map onto its pause/resume, prefix-cache, `collective_rpc`
(our worker extension) and weight-transfer methods. Errors are the ones the app already maps (`RequestError`,
`ContractError`, `BadCheckpoint`, `EngineError`), so both backends answer alike.

Pausing: new requests wait here until resume (at most `request_timeout_s`, then 503 unavailable), and
vLLM's scheduler handles the ones it holds: `abort` ends them (503 aborted), `wait` lets them finish
first, `keep` freezes them until resume. A weight update does not need a pause: vLLM runs the reload
between two engine steps, then drops the prefix and encoder caches computed with the old weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fastapi import APIRouter, Request
from transformers import GenerationConfig
from vllm import RequestOutput
from vllm import SamplingParams as EngineSamplingParams
from vllm.distributed.weight_transfer.base import WeightTransferInitRequest, WeightTransferUpdateRequest
from vllm.engine.protocol import EngineClient
from vllm.exceptions import (
    GracefulHTTPError,
    MaxQueuedTokensError,
    QueueOverflowError,
    VLLMClientError,
    VLLMServerError,
)
from vllm.inputs import EngineInput
from vllm.renderers.inputs.preprocess import parse_model_prompt
from vllm.v1.engine.exceptions import EngineDeadError

from foveal.renderers.factory import build_renderer
from foveal.renderers.inference.wire import (
    ControlResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    GenerateRequest,
    GenerateResponse,
    Health,
    PauseMode,
    ServerInfo,
    ServerState,
    TokenizeRequest,
    TokenizeResponse,
    UpdateWeightsRequest,
)
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.serving.backends.vllm.launch import (
    check_vllm_loadable,
    engine_args,
    local_model_folder,
    start_engine,
)
from foveal.trainer.serving.backends.vllm.mm_inputs import EnginePrompt, ImageChecks, check_expansion, engine_prompt
from foveal.trainer.serving.backends.vllm.sampling import completions, engine_sampling
from foveal.trainer.serving.backends.vllm.weight_broadcast import (
    WeightBroadcastInit,
    WeightBroadcastUpdate,
    weight_broadcast_routes,
)
from foveal.trainer.serving.backends.vllm.weight_layout import check_same_layout, read_layout
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.engine.requests import EngineError, Overloaded, Unavailable
from foveal.trainer.serving.errors import RequestError, invalid, too_long
from foveal.trainer.model.loading import is_vision_model, load_processor, resolve_source

LOAD_WEIGHTS = "foveal_load_weights"
"""The worker extension method `collective_rpc` calls (worker_extension.FovealWorkerExtension)."""


class VLLMBackend:
    """One model served by vLLM (`[inference].tensor_parallel` x `data_parallel` GPUs) and its renderer."""

    def __init__(self, config: ServeConfig, *, cache_root: Path | None = None, engine: EngineClient | None = None):
        """`cache_root` is where `tiny:` models are built; `engine` is an already started vLLM client."""
        self.config = config
        folder = local_model_folder(resolve_source(config.model.name_or_path, cache_root))
        check_vllm_loadable(folder)
        store = ImageStore.from_config(config.multimodal, config.logging.run_dir)
        self.renderer = build_renderer(folder, config.renderer, store=store, multimodal=config.multimodal)
        self.tokenizer = self.renderer.tokenizer
        self.image_checks = _image_checks(config, folder, store, self.renderer.adapter.layout_family)
        self.stop_token_ids = _stop_token_ids(folder, self.renderer.stop_token_ids)
        self.served_layout = read_layout(folder)
        layout = self.image_checks.adapter.spec if self.image_checks else None
        self.engine = engine if engine is not None else start_engine(engine_args(config, folder, layout))
        self.max_model_len = int(self.engine.model_config.max_model_len)
        self.vocab_size = int(self.engine.model_config.get_vocab_size())
        self.weight_version = 0
        self.state: ServerState = "serving"
        self.in_flight = 0
        self._control = asyncio.Lock()
        self._serving = asyncio.Event()
        self._serving.set()

    # -- data plane ---------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        return ServerInfo(
            model=self.config.model.name_or_path,
            family=self.renderer.family,
            backend="vllm",
            max_model_len=self.max_model_len,
            weight_version=self.weight_version,
            state=self.state,
            image_token_id=self.renderer.image_token_id,
            stop_token_ids=self.stop_token_ids,
            layout_fingerprint=self.image_checks.adapter.spec.fingerprint if self.image_checks else None,
            served_model_names=self.config.inference.served_model_name,
        )

    def health(self) -> Health:
        if self.engine.errored:
            raise Unavailable("the vLLM engine has stopped")
        return Health(state=self.state, in_flight=self.in_flight)

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        request_id = request.request_id or uuid.uuid4().hex
        prepared = await asyncio.to_thread(self._prepare, request)
        engine_input = await self._rendered(prepared)
        params = engine_sampling(request.sampling, self.stop_token_ids)
        await self._until_serving()
        self.in_flight += 1
        try:
            output = await self._final_output(engine_input, params, request_id)
        finally:
            self.in_flight -= 1
        return await asyncio.to_thread(self._response, request, request_id, output)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        return TokenizeResponse(token_ids=tuple(self.tokenizer.encode(request.text, add_special_tokens=False)))

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        _check_ids(request.token_ids, self.vocab_size, "token_ids")
        return DetokenizeResponse(text=self._decode(request.token_ids))

    # -- control plane ------------------------------------------------------------------------------

    async def pause(self, mode: PauseMode) -> ControlResponse:
        async with self._control:
            self._refuse_mid_broadcast()
            self._serving.clear()
            self.state = "paused"
            await self.engine.pause_generation(mode=mode, clear_cache=False)
        return self._control_response()

    async def resume(self) -> ControlResponse:
        async with self._control:
            self._refuse_mid_broadcast()
            await self.engine.resume_generation()
            self.state = "serving"
            self._serving.set()
        return self._control_response()

    async def update_weights(self, request: UpdateWeightsRequest) -> ControlResponse:
        """Check the folder's layout here (headers only), then have every worker reload from it in place."""
        folder = Path(request.path).resolve()
        update = await asyncio.to_thread(read_layout, folder)
        check_same_layout(update, self.served_layout)
        async with self._control:
            self._refuse_mid_broadcast()
            with self._showing("updating"):
                fed = await self.engine.collective_rpc(LOAD_WEIGHTS, args=(str(folder),))
                if any(count != len(update.tensors) for count in fed):
                    raise EngineError(f"workers loaded {fed} tensors of the checkpoint's {len(update.tensors)}")
                await self._weights_changed(request.version)
        return self._control_response()

    async def reset_prefix_cache(self) -> ControlResponse:
        async with self._control:
            await self._reset_prefix_cache()
        return self._control_response()

    def close(self) -> None:
        self.engine.shutdown()

    # -- NCCL weight broadcast (vLLM's weight-transfer engine; the trainer is rank 0) -----------------

    def extra_control_routes(self, guard: Callable[[Request], None]) -> APIRouter:
        """The NCCL weight-broadcast round, mounted by `create_app` behind the control-plane token."""
        return weight_broadcast_routes(self, guard)

    async def init_weight_broadcast(self, request: WeightBroadcastInit) -> ControlResponse:
        """Join the trainer's NCCL group; blocks until the trainer joins too."""
        async with self._control:
            await self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=request.init_info()))
        return self._control_response()

    async def start_weight_broadcast(self) -> ControlResponse:
        """Begin a broadcast round; the model is mid-reload until `finish`, so the server must be paused."""
        async with self._control:
            if self.state != "paused":
                raise RequestError("invalid_request", 409, "pause the server before a weight broadcast", "state")
            await self.engine.start_weight_update()
            self.state = "updating"
        return self._control_response()

    async def receive_weight_broadcast(self, request: WeightBroadcastUpdate) -> ControlResponse:
        """Receive the tensors the trainer broadcasts now (the trainer sends while this call is in flight)."""
        async with self._control:
            if self.state != "updating":
                raise RequestError("invalid_request", 409, "start a weight broadcast first", "state")
            await self.engine.update_weights(WeightTransferUpdateRequest(update_info=request.update_info()))
        return self._control_response()

    async def finish_weight_broadcast(self, version: int) -> ControlResponse:
        async with self._control:
            if self.state != "updating":
                raise RequestError("invalid_request", 409, "start a weight broadcast first", "state")
            await self.engine.finish_weight_update()
            await self._weights_changed(version)
            self.state = "paused"
        return self._control_response()

    # -- helpers ------------------------------------------------------------------------------------

    def _prepare(self, request: GenerateRequest) -> EnginePrompt:
        """Check ids and length, and the image refs against the prompt and the served processor."""
        _check_ids(request.prompt_token_ids, self.vocab_size, "prompt_token_ids")
        _check_length(len(request.prompt_token_ids), request.sampling.max_tokens, self.max_model_len)
        return engine_prompt(request.prompt_token_ids, request.image_refs, self.image_checks)

    async def _rendered(self, prepared: EnginePrompt) -> EngineInput:
        """vLLM's input for the prompt: its processor computes the pixels and expands each image's run,
        which must give back the request's tokens exactly, before anything is sampled."""
        parsed = parse_model_prompt(self.engine.model_config, prepared.prompt)
        try:
            (engine_input,) = await self.engine.renderer.render_cmpl_async([parsed])
        except VLLMClientError as error:
            raise RequestError("invalid_request", 400, f"vLLM refused the prompt: {error}") from None
        check_expansion(engine_input.get("prompt_token_ids"), prepared.expanded_ids)
        return engine_input

    async def _until_serving(self) -> None:
        """Wait out a pause, up to `request_timeout_s`."""
        timeout = self.config.inference.request_timeout_s
        try:
            await asyncio.wait_for(self._serving.wait(), timeout)
        except TimeoutError:
            raise Unavailable(f"the server stayed paused for {timeout} s") from None

    async def _final_output(self, prompt: EngineInput, params: EngineSamplingParams, request_id: str) -> RequestOutput:
        """Run one request through vLLM; its failures become the errors the app maps."""
        final = None
        try:
            async for output in self.engine.generate(prompt, params, request_id):
                final = output
        except EngineDeadError:
            raise Unavailable("the vLLM engine has stopped") from None
        except (QueueOverflowError, MaxQueuedTokensError) as error:
            raise Overloaded(str(error)) from None
        except GracefulHTTPError as error:
            raise (Overloaded if error.http_status == 429 else Unavailable)(str(error)) from None
        except VLLMClientError as error:
            raise RequestError("invalid_request", 400, f"vLLM refused the request: {error}") from None
        except VLLMServerError as error:
            raise EngineError(f"vLLM failed the request: {error!r}") from error
        if final is None:
            raise EngineError("vLLM ended the request without an output")
        return final

    def _response(self, request: GenerateRequest, request_id: str, output: RequestOutput) -> GenerateResponse:
        return GenerateResponse(
            request_id=request_id,
            model=self.config.model.name_or_path,
            weight_version=self.weight_version,
            prompt_tokens=len(request.prompt_token_ids),
            completions=completions(output, request.sampling, self._decode),
        )

    async def _weights_changed(self, version: int) -> None:
        """Drop what the old weights computed (vision embeddings, KV blocks), then adopt the new version."""
        await self.engine.reset_encoder_cache()
        await self._reset_prefix_cache()
        await self.engine.update_weight_version(str(version))
        self.weight_version = version

    async def _reset_prefix_cache(self) -> None:
        # Running requests are preempted and recomputed, so none keeps KV blocks from older weights.
        if not await self.engine.reset_prefix_cache(reset_running_requests=True):
            raise EngineError("vLLM did not reset its prefix cache")

    def _refuse_mid_broadcast(self) -> None:
        """Between a broadcast's start and finish the model is mid-reload: it must neither serve nor load."""
        if self.state == "updating":
            raise RequestError("invalid_request", 409, "a weight broadcast is in progress; finish it first", "state")

    @contextlib.contextmanager
    def _showing(self, state: ServerState) -> Iterator[None]:
        """Report `state` while the block runs, then what was reported before."""
        before, self.state = self.state, state
        try:
            yield
        finally:
            self.state = before

    def _control_response(self) -> ControlResponse:
        return ControlResponse(state=self.state, weight_version=self.weight_version, in_flight=self.in_flight)

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False)


def _image_checks(
    config: ServeConfig, folder: Path, store: ImageStore, layout_family: str | None
) -> ImageChecks | None:
    """The trainer's image adapter bound to the served processor; None for text-only models."""
    if not is_vision_model(str(folder), config.model.trust_remote_code):
        return None
    if layout_family is None:
        raise invalid("renderer.family", f"a family with an image layout for the vision model {folder}")
    adapter = image_adapter(layout_family, load_processor(config.model, str(folder)), config.multimodal)
    return ImageChecks(adapter, store)


def _stop_token_ids(folder: Path, renderer_stops: Sequence[int]) -> tuple[int, ...]:
    """The model's own end tokens (generation_config.json) and the renderer's end-of-turn tokens."""
    eos = (
        GenerationConfig.from_pretrained(folder).eos_token_id if (folder / "generation_config.json").is_file() else None
    )
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return tuple(dict.fromkeys([*eos_ids, *renderer_stops]))


def _check_ids(token_ids: Sequence[int], vocab_size: int, field: str) -> None:
    for index, token in enumerate(token_ids):
        if not 0 <= token < vocab_size:
            raise invalid(f"{field}[{index}]", f"a token id in [0, {vocab_size}) (got {token})")


def _check_length(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    if prompt_tokens >= limit:
        raise too_long("prompt_token_ids", f"{prompt_tokens} tokens; the model takes fewer than {limit}")
    if prompt_tokens + max_tokens > limit:
        raise too_long("sampling.max_tokens", f"{max_tokens} after a {prompt_tokens}-token prompt exceeds {limit}")
