"""The stand-ins, helpers and fixtures of the vLLM backend tests (imported only where vllm is installed)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

# vLLM resolves its platform once per process, on first use: these tests run on its CPU platform.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from safetensors.torch import load_file, save_file
from transformers import AutoProcessor
from vllm import RequestOutput, SamplingParams
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.distributed import (
    destroy_distributed_environment,
    destroy_model_parallel,
    init_distributed_environment,
    initialize_model_parallel,
)
from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo
from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferUpdateInfo
from vllm.logprobs import FlatLogprobs, Logprob
from vllm.model_executor.model_loader import get_model
from vllm.model_executor.model_loader.reload.inplace import reload_weights
from vllm.outputs import CompletionOutput
from vllm.renderers import renderer_from_config
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.engine.input_processor import InputProcessor

from foveal.configs import MultimodalConfig
from foveal.renderers.contract import encode_mmraw
from foveal.renderers.factory import load_renderer
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.serving.backends.vllm.launch import engine_args
from foveal.trainer.serving.backends.vllm.mm_inputs import ImageChecks
from foveal.trainer.serving.backends.vllm.worker_extension import FovealWorkerExtension
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer

VLM, TEXT = "qwen2_5_vl", "qwen3"
STOP = 9  # a plain token the scripted engine ends completions with, when the request lets it stop
SCRIPT = (5, 6, 7)


def serve_config(root: Path, family: str, name_or_path: str | None = None, **inference: Any) -> ServeConfig:
    return ServeConfig.model_validate(
        {
            "model": {"name_or_path": name_or_path or f"tiny:{family}", "dtype": "float32"},
            "logging": {"run_dir": str(root / "run")},
            "multimodal": {"offload_dir": str(root / "store")},
            "inference": {"backend": "vllm", "max_model_len": 512, "request_timeout_s": 1.0, **inference},
        }
    )


def vllm_config(config: ServeConfig, folder: Path, **multimodal: Any) -> VllmConfig:
    """vLLM's config of the served folder, from our engine arguments (the VLM's pixel bounds from its adapter)."""
    layout = None
    if (folder / "preprocessor_config.json").is_file():
        adapter = image_adapter("qwen2_vl", AutoProcessor.from_pretrained(folder), MultimodalConfig(**multimodal))
        layout = adapter.spec
    return engine_args(config, folder, layout).create_engine_config()


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def image_prompt(renderer: Renderer, *images: Image.Image) -> RenderedConversation:
    content = [*({"type": "image", "image": image} for image in images), {"type": "text", "text": "Describe."}]
    return renderer.render([{"role": "user", "content": content}], add_generation_prompt=True)


def refs(rendered: RenderedConversation) -> list[str]:
    return [encode_mmraw(image.descriptor) for image in rendered.images]


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def post(server: RunningServer, path: str, body: dict[str, Any] | None = None, control: bool = False) -> httpx.Response:
    headers = server.control_headers if control else {}
    return httpx.post(f"{server.url}{path}", json=body or {}, headers=headers, timeout=30)


# -- vLLM's engine core stood in for (a separate process in vLLM) ---------------------------------------


class ScriptedEngine:
    """The engine client's surface the backend uses. What `AsyncLLM` does in the API process is vLLM's own
    code (`model_config`, the input `renderer`, and `InputProcessor`, which validates each request and turns
    it into the `EngineCoreRequest` sent to the engine processes); the engine core is scripted: each
    completion is SCRIPT then STOP, cut at `max_tokens`. With `hold` set, requests wait until a pause (abort:
    they end aborted) or resume releases them."""

    def __init__(self, config: VllmConfig, worker: FovealWorkerExtension | None = None) -> None:
        self.model_config = config.model_config
        self.renderer = renderer_from_config(config)
        self.input_processor = InputProcessor(config, self.renderer)
        self.worker = worker
        self.errored = False
        self.hold = False
        self.fail_with: Exception | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.inputs: list[EngineCoreRequest] = []
        self._held: list[asyncio.Future[str]] = []

    async def generate(
        self, prompt: dict[str, Any], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        request = self.input_processor.process_inputs(request_id, prompt, params, supported_tasks=("generate",))
        self.inputs.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        outcome = "done"
        if self.hold:
            waiter = asyncio.get_running_loop().create_future()
            self._held.append(waiter)
            outcome = await waiter
        sampled = request.sampling_params
        outputs = [self._completion(index, sampled, aborted=outcome == "abort") for index in range(sampled.n)]
        yield RequestOutput(request_id, None, request.prompt_token_ids, None, outputs, finished=True)

    async def pause_generation(self, *, mode: str = "abort", clear_cache: bool = True) -> None:
        self.calls.append(("pause", mode, clear_cache))
        if mode != "keep":
            self._release("abort" if mode == "abort" else "done")

    async def resume_generation(self) -> None:
        self.calls.append(("resume",))
        self._release("done")

    async def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.calls.append(("reset_prefix_cache", reset_running_requests))
        return True

    async def reset_encoder_cache(self) -> None:
        self.calls.append(("reset_encoder_cache",))

    async def update_weight_version(self, version: str) -> None:
        self.calls.append(("weight_version", version))

    async def collective_rpc(
        self, method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None
    ) -> list[Any]:
        self.calls.append(("collective_rpc", method, args))
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    async def init_weight_transfer_engine(self, request: Any) -> None:
        self.calls.append(("init_weight_transfer", NCCLWeightTransferInitInfo(**request.init_info)))

    async def start_weight_update(self) -> None:
        self.calls.append(("start_weight_update",))

    async def update_weights(self, request: Any) -> None:
        self.calls.append(("update_weights", NCCLWeightTransferUpdateInfo(**request.update_info)))

    async def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.calls.append(("finish_weight_update",))

    def shutdown(self, timeout: float | None = None) -> None:
        self.calls.append(("shutdown",))

    def _completion(self, index: int, params: SamplingParams, aborted: bool) -> CompletionOutput:
        script = [*SCRIPT, STOP] if STOP in (params.stop_token_ids or ()) else list(SCRIPT) * 8
        token_ids = script[: 1 if aborted else params.max_tokens]
        logprobs = FlatLogprobs()
        for position, token in enumerate(token_ids):
            logprobs.append({token: Logprob(logprob=-0.25 * (position + 1), rank=1)})
        finish = "abort" if aborted else "stop" if token_ids[-1] == STOP else "length"
        return CompletionOutput(
            index, "", token_ids, None, logprobs if params.logprobs is not None else None, finish_reason=finish
        )

    def _release(self, outcome: str) -> None:
        for waiter in self._held:
            if not waiter.done():
                waiter.set_result(outcome)
        self._held.clear()


# -- vLLM's GPU worker stood in for, around a real vLLM model on CPU ------------------------------------


class CpuWorker(FovealWorkerExtension):
    """vLLM's `Worker` needs CUDA to exist; this keeps its `reload_weights` delegation (gpu_worker.py:629 ->
    gpu_model_runner.py:5287: vLLM's in-place reload under the worker's config) for a model vLLM loaded."""

    def __init__(self, config: VllmConfig, model: torch.nn.Module) -> None:
        self.vllm_config = config
        self.model = model

    def reload_weights(self, weights_iterator: Iterator[tuple[str, torch.Tensor]], is_checkpoint_format: bool) -> None:
        with set_current_vllm_config(self.vllm_config):
            reload_weights(self.vllm_config, self.model, weights_iterator, None, is_checkpoint_format)


@dataclass
class LoadedModel:
    config: VllmConfig
    folder: Path
    worker: CpuWorker

    def parameters(self) -> dict[str, torch.Tensor]:
        return {name: param.detach().clone() for name, param in self.worker.model.named_parameters()}


@pytest.fixture(scope="module")
def vllm_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]
) -> Iterator[Callable[[str], LoadedModel]]:
    """family -> a vLLM model built and loaded on CPU by vLLM's loader, inside one gloo 'world' of size 1."""
    root = tmp_path_factory.mktemp("vllm-models")
    loaded: dict[str, LoadedModel] = {}

    def load(family: str) -> LoadedModel:
        if family not in loaded:
            folder = tiny_model_dir(family)
            config = vllm_config(serve_config(root, family), folder)
            with set_current_vllm_config(config):
                if not loaded:
                    rendezvous = f"file://{root / 'rendezvous'}"
                    init_distributed_environment(
                        world_size=1, rank=0, distributed_init_method=rendezvous, local_rank=0, backend="gloo"
                    )
                    initialize_model_parallel(1, 1)
                model = get_model(vllm_config=config)
            loaded[family] = LoadedModel(config, folder, CpuWorker(config, model))
        return loaded[family]

    yield load
    if loaded:
        destroy_model_parallel()
        destroy_distributed_environment()


def assert_reloaded(loaded: LoadedModel, before: dict[str, torch.Tensor]) -> None:
    """Every parameter is 2 * old + 1, except the rows vLLM pads vocabulary tables with (never loaded, zero)."""
    vocab = loaded.config.model_config.get_vocab_size()
    after = loaded.parameters()
    assert after.keys() == before.keys()
    for name, old in before.items():
        rows = vocab if name.endswith(("embed_tokens.weight", "lm_head.weight")) else len(old)
        assert torch.equal(after[name][:rows], 2 * old[:rows] + 1), name
        assert not after[name][rows:].any(), name


def trainer_checkpoint(served: Path, folder: Path, shards: int = 1) -> dict[str, torch.Tensor]:
    """A checkpoint folder as the trainer writes it (model files and config, an optimizer file beside them);
    every tensor is 2 * served + 1, so a tensor loaded into the wrong parameter cannot go unnoticed."""
    tensors = {name: 2 * tensor + 1 for name, tensor in load_file(served / "model.safetensors").items()}
    folder.mkdir(parents=True)
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, folder / "model.safetensors")
    else:
        weight_map = {}
        for shard in range(shards):
            file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
            part = names[shard::shards]
            save_file({name: tensors[name] for name in part}, folder / file)
            weight_map.update(dict.fromkeys(part, file))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_bytes((served / "config.json").read_bytes())
    save_file({"state/model.embed_tokens.weight/exp_avg": torch.zeros(3)}, folder / "optimizer.safetensors")
    return tensors


# -- the served VLM: vLLM's config of it, a client's renderer, the server's image checks ---------------------


@pytest.fixture(scope="module")
def vlm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vlm")


@pytest.fixture(scope="module")
def vlm_config(vlm_root: Path, tiny_model_dir: Callable[[str], Path]) -> VllmConfig:
    return vllm_config(serve_config(vlm_root, VLM), tiny_model_dir(VLM))


@pytest.fixture(scope="module")
def client_renderer(vlm_root: Path, tiny_model_dir: Callable[[str], Path]) -> Renderer:
    """An orchestrator's renderer, writing images into the store the server reads."""
    return load_renderer(tiny_model_dir(VLM), store=ImageStore(vlm_root / "store", MultimodalConfig(), durable=False))


@pytest.fixture(scope="module")
def checks(vlm_root: Path, tiny_model_dir: Callable[[str], Path]) -> ImageChecks:
    processor = AutoProcessor.from_pretrained(tiny_model_dir(VLM))
    adapter = image_adapter("qwen2_vl", processor, MultimodalConfig())
    return ImageChecks(adapter, ImageStore(vlm_root / "store", MultimodalConfig()))
