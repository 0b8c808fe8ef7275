"""Sampling clients: each serves one sampler checkpoint folder through the embedded inference backend.

A sampler folder (saved weights, or the base model) is served by `foveal serve`'s own
`TransformersBackend`: the same loading, image materialization, continuous-batching engine, sampler and
logprobs. Folders are loaded on first use and kept in a small LRU (`[tinker].max_loaded_samplers`); an
evicted one has its engine stopped. Prompt logprobs (`compute_logprobs`, `include_prompt_logprobs`) are
one packed forward of the served model, the trainer's own forward (`packed_logits`), run on the engine
thread between decode steps, so they equal the logprobs training computes for the same weights.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.wire import GenerateRequest
from foveal.renderers.inference.wire import SamplingParams as EngineSampling
from foveal.renderers.rendering import RenderedConversation
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.serving.backends.transformers import TransformersBackend
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.data.samples import sample_from_render
from foveal.trainer.tinker_service.protowire import SampledOut, sample_response
from foveal.trainer.tinker_service.wire import SampleRequest, SamplingParams


class SamplerPool:
    """Loaded sampler backends by folder; thread-safe, least recently used evicted beyond `max_loaded`."""

    def __init__(self, serve_config: Callable[[Path], ServeConfig], max_loaded: int) -> None:
        self.serve_config = serve_config
        self.max_loaded = max_loaded
        self._backends: OrderedDict[Path, TransformersBackend] = OrderedDict()
        self._lock = threading.Lock()

    def backend(self, folder: Path) -> TransformersBackend:
        """The backend serving `folder`, loading it (and evicting the least recent) if needed."""
        with self._lock:
            backend = self._backends.get(folder)
            if backend is None:
                backend = TransformersBackend(self.serve_config(folder))
                self._backends[folder] = backend
            self._backends.move_to_end(folder)
            while len(self._backends) > self.max_loaded:
                _, evicted = self._backends.popitem(last=False)
                evicted.close()
            return backend

    def close(self) -> None:
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()


def engine_sampling(params: SamplingParams, num_samples: int, max_tokens: int) -> EngineSampling:
    """Tinker's sampling parameters in the engine's terms: `stop=[]` samples past EOS, ints are stop tokens."""
    stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
    token_stops = tuple(item for item in stop if isinstance(item, int))
    return EngineSampling(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=max(params.top_k, 0),
        max_tokens=max_tokens,
        stop=tuple(item for item in stop if isinstance(item, str)),
        stop_token_ids=token_stops,
        ignore_eos=params.stop is not None and not stop,
        seed=params.seed,
        n=num_samples,
        logprobs=True,
    )


async def sample(
    backend: TransformersBackend, request: SampleRequest, rendered: RenderedConversation, max_tokens: int
) -> bytes:
    """Sample through the engine, add prompt logprobs when asked; the protobuf `SampleResponse`."""
    generate = GenerateRequest(
        prompt_token_ids=rendered.token_ids,
        image_refs=tuple(encode_mmraw(image.descriptor) for image in rendered.images),
        sampling=engine_sampling(request.sampling_params, request.num_samples, max_tokens),
    )
    response = await backend.generate(generate)
    sequences = [
        SampledOut(completion.token_ids, completion.logprobs or (), completion.finish_reason)
        for completion in response.completions
    ]
    prompt = None
    if request.prompt_logprobs:
        sample_ = sample_from_render(rendered, backend.renderer.image_token_id, "prompt", loss_weights=None)
        prompt = await asyncio.wrap_future(backend.engine.call(lambda: prompt_logprobs(backend, sample_)))
        if request.prompt_logprobs_last_n is not None:
            keep = len(prompt) - request.prompt_logprobs_last_n
            prompt = [math.nan] * keep + prompt[keep:]
    return sample_response(sequences, prompt)


def prompt_logprobs(backend: TransformersBackend, sample_: TrainingSample) -> list[float]:
    """The logprob of each prompt token given the ones before it (NaN for the first, which has no context)."""
    packed = backend.materializer.materialize(sample_) if backend.materializer else _text_only(sample_)
    batch = collate_packed([packed], position_scheme(backend.model)).to(backend.device)
    with torch.inference_mode():
        logits = packed_logits(backend.model, batch)
    logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    scored = logprobs.gather(-1, batch.input_ids[0, 1:].view(-1, 1)).squeeze(-1)
    return [math.nan, *scored.tolist()]


def _text_only(sample_: TrainingSample) -> PackSample:
    return PackSample(sample_.sample_id, sample_.token_ids, sample_.loss_weights)
