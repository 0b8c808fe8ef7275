"""vLLM's per-position logprob entries -> ours; imports no vllm, so it is tested on any machine.

For each sampled position vLLM reports a `{token id: Logprob}` mapping (a dict, or one position of a
`FlatLogprobs`): the sampled token's entry, plus the `logprobs=N` most likely tokens when asked for (the
sampled token may be one of them, so a position holds N or N + 1 entries). With `logprobs_mode="raw_logprobs"`
(pinned in `launch.engine_args`) they are the raw model distribution's, as on the transformers backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from foveal.renderers.inference.wire import Alternative
from foveal.trainer.serving.engine.requests import EngineError


class HasLogprob(Protocol):
    """What is read of vLLM's `Logprob`."""

    logprob: float


PositionLogprobs = Mapping[int, HasLogprob]


def sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[PositionLogprobs] | None) -> tuple[float, ...]:
    """The logprob of each sampled token, from vLLM's per-position entries."""
    if logprobs is None or len(logprobs) != len(token_ids):
        count = "none" if logprobs is None else len(logprobs)
        raise EngineError(f"vLLM returned logprobs for {count} of {len(token_ids)} sampled tokens")
    values = []
    for position, (token_id, candidates) in enumerate(zip(token_ids, logprobs, strict=True)):
        entry = candidates.get(token_id)
        if entry is None:
            raise EngineError(f"vLLM returned no logprob for sampled token {token_id} at position {position}")
        values.append(float(entry.logprob))
    return tuple(values)


def top_logprobs(logprobs: Sequence[PositionLogprobs], count: int) -> tuple[tuple[Alternative, ...], ...]:
    """Each position's `count` most likely tokens, best first: a sampled token outside them is left out, as
    are tokens of logprob -inf (impossible, and not JSON)."""
    return tuple(_best(candidates, count) for candidates in logprobs)


def _best(candidates: PositionLogprobs, count: int) -> tuple[Alternative, ...]:
    ranked = sorted(((token, float(entry.logprob)) for token, entry in candidates.items()), key=lambda pair: -pair[1])
    return tuple((token, value) for token, value in ranked[:count] if math.isfinite(value))
