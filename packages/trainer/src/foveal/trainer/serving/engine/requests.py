"""What the engine is asked to do and what it hands back, plus the errors that end a request early.

An `EngineRequest` is fully checked before it reaches the engine thread (token ids in range, images
materialized, length within the model's limit), so the engine itself only fails for server-side reasons:
an abort by a control request, a request that waited too long to start, or a bug.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field

import torch

from foveal.renderers.inference.wire import Alternative, FinishReason, SamplingParams


class EngineError(RuntimeError):
    """A request the engine ended without completions; `code` is the wire ErrorCode it maps to."""

    code = "internal"
    http_status = 500


class Aborted(EngineError):
    """In-flight work dropped by `pause(mode="abort")`; safe to retry after resume."""

    code = "aborted"
    http_status = 503


class Unavailable(EngineError):
    """The request could not start in time (the server stayed paused or busy), or the engine stopped."""

    code = "unavailable"
    http_status = 503


class Overloaded(EngineError):
    """The queue of requests waiting to start is full."""

    code = "overloaded"
    http_status = 429


@dataclass(frozen=True)
class EngineRequest:
    """One prompt to sample `sampling.n` completions of; `pixel_kwargs` are the model's image inputs."""

    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams
    pixel_kwargs: Mapping[str, torch.Tensor] = field(default_factory=dict)
    image_key: str = ""
    """Names the images (their hashes); with `prompt_ids` it keys the prompt cache."""


@dataclass(frozen=True)
class SampledCompletion:
    """One finished completion: sampled ids, their logprobs under the raw model distribution, why it ended."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    top_logprobs: tuple[tuple[Alternative, ...], ...] = ()
    """Per sampled token, its position's most likely tokens (each `()` unless the request asked for them)."""


@dataclass(frozen=True)
class TokenEvent:
    """One token of completion `index` as soon as it is sampled (streaming); `finish_reason` is set on its last."""

    index: int
    token_id: int
    logprob: float
    finish_reason: FinishReason | None
    top_logprobs: tuple[Alternative, ...] = ()
    """The position's most likely tokens, best first, when the request asked for them."""


TokenStream = AsyncGenerator[TokenEvent, None]
"""A streaming request's tokens, in sampling order (per completion)."""
TokenListener = Callable[[TokenEvent], None]
"""Called on the engine thread for every sampled token of a request that asked for them: must be quick."""


@dataclass(frozen=True)
class EngineResult:
    """All completions of a request in sample order, and the weight version when the last one finished."""

    completions: tuple[SampledCompletion, ...]
    weight_version: int
