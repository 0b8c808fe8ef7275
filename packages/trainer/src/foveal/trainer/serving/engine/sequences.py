"""Book-keeping of requests inside the engine: each request fans out into `n` sequences (completions).

A `Tracked` request owns the future its HTTP handler awaits; its sequences fill their slots as they
finish, and the future resolves once every slot is filled (or fails once, for all of them). Only the
engine thread mutates these objects; `cancel` may be called from any thread and is only a flag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch

from foveal.renderers.inference.wire import Alternative, FinishReason
from foveal.trainer.serving.engine.requests import (
    EngineError,
    EngineRequest,
    EngineResult,
    SampledCompletion,
    TokenEvent,
    TokenListener,
)
from foveal.trainer.serving.engine.stopping import Decode, StopRule


@dataclass(eq=False)
class Tracked:
    """One submitted request and its result slots."""

    request: EngineRequest
    stop: StopRule
    deadline: float
    """Monotonic time by which it must have started, else it fails as unavailable."""
    future: Future[EngineResult] = field(default_factory=Future)
    slots: list[SampledCompletion | None] = field(default_factory=list)
    started: bool = False
    cancelled: bool = False
    on_token: TokenListener | None = None
    """Told of every sampled token (streaming requests); the future still resolves as for any request."""

    def __post_init__(self) -> None:
        self.slots = [None] * self.request.sampling.n

    @property
    def done(self) -> bool:
        return self.future.done()

    def expired(self, now: float | None = None) -> bool:
        return not self.started and (time.monotonic() if now is None else now) > self.deadline

    def cancel(self) -> None:
        """Called by a handler that stopped waiting (timeout, disconnect): the engine drops its work."""
        self.cancelled = True

    def fill(self, index: int, completion: SampledCompletion, weight_version: int) -> None:
        self.slots[index] = completion
        if all(slot is not None for slot in self.slots):
            result = EngineResult(tuple(self.slots), weight_version)  # type: ignore[arg-type]
            self._settle(lambda: self.future.set_result(result))

    def fail(self, error: EngineError) -> None:
        self._settle(lambda: self.future.set_exception(error))

    def _settle(self, set_outcome: Callable[[], None]) -> None:
        """Set the outcome once; a handler may have cancelled the future from its own thread meanwhile."""
        try:
            set_outcome()
        except InvalidStateError:
            pass  # already cancelled or settled: nobody is waiting for this outcome


@dataclass(eq=False)
class Sequence:
    """One completion being sampled: its tokens so far and the generator that samples it."""

    owner: Tracked
    index: int
    generator: torch.Generator
    next_position: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[tuple[Alternative, ...]] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token: int, logprob: float, decode: Decode, alternatives: tuple[Alternative, ...] = ()) -> None:
        """Record a sampled token (and its position's alternatives) and decide whether the completion ends with it."""
        self.token_ids.append(token)
        self.logprobs.append(logprob)
        self.top_logprobs.append(alternatives)
        self.next_position += 1
        self.finish_reason = self.owner.stop.finish_reason(self.token_ids, decode)
        if self.owner.on_token is not None:
            self.owner.on_token(TokenEvent(self.index, token, logprob, self.finish_reason, alternatives))

    def completion(self) -> SampledCompletion:
        assert self.finish_reason is not None
        top = tuple(self.top_logprobs)
        return SampledCompletion(tuple(self.token_ids), tuple(self.logprobs), self.finish_reason, top)
