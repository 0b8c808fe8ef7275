"""When a completion ends: a stop token, a stop string, or its token budget.

Stop tokens and strings stay in the completion's ids (the renderer's `append_completion` expects the
sampled stop token, and a trainer trains on exactly what was sampled). Stop strings are looked for in
the decoded tail only: a string of k characters that ends in the newest token spans at most k tokens,
and an earlier occurrence would have ended the completion at an earlier step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from foveal.renderers.inference.wire import FinishReason, SamplingParams

Decode = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class StopRule:
    """The end conditions of one request's completions."""

    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    max_tokens: int

    @classmethod
    def for_request(cls, params: SamplingParams, model_stop_ids: Sequence[int]) -> StopRule:
        model_stops = () if params.ignore_eos else tuple(model_stop_ids)
        return cls(frozenset((*model_stops, *params.stop_token_ids)), params.stop, params.max_tokens)

    def finish_reason(self, token_ids: Sequence[int], decode: Decode) -> FinishReason | None:
        """Why the completion `token_ids` ends after its newest token, or None when it goes on."""
        if token_ids[-1] in self.stop_ids:
            return "stop"
        if self.stop_strings:
            window = max(len(stop) for stop in self.stop_strings) + 1
            tail = decode(token_ids[-window:])
            if any(stop in tail for stop in self.stop_strings):
                return "stop"
        if len(token_ids) >= self.max_tokens:
            return "length"
        return None
