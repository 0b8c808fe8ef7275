"""vLLM's per-position logprobs -> ours, with plain stand-ins shaped like vLLM's `Logprob` entries (the module
imports no vllm, so this runs without the extra)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from foveal.trainer.serving.backends.vllm.logprobs import sampled_logprobs, top_logprobs
from foveal.trainer.serving.engine.requests import EngineError


@dataclass
class Logprob:
    """Shaped like `vllm.logprobs.Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def test_each_position_keeps_its_n_most_likely_tokens_best_first() -> None:
    positions = [
        {7: Logprob(-0.1, 1), 3: Logprob(-2.0, 3), 5: Logprob(-1.5, 2)},  # the sampled 7 among the top 3
        {9: Logprob(-6.0, 12), 2: Logprob(-0.3, 1), 4: Logprob(-1.9, 3), 8: Logprob(-1.2, 2)},  # 9 outside them
    ]
    assert top_logprobs(positions, 3) == (
        ((7, -0.1), (5, -1.5), (3, -2.0)),
        ((2, -0.3), (8, -1.2), (4, -1.9)),
    )
    assert sampled_logprobs([7, 9], positions) == (-0.1, -6.0)


def test_impossible_alternatives_are_left_out() -> None:
    assert top_logprobs([{1: Logprob(-0.5, 1), 2: Logprob(-math.inf, 2)}], 2) == (((1, -0.5),),)


def test_a_sampled_token_without_an_entry_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="no logprob for sampled token 4"):
        sampled_logprobs([4], [{1: Logprob(-0.5, 1)}])
    with pytest.raises(EngineError, match="logprobs for 1 of 2"):
        sampled_logprobs([4, 5], [{4: Logprob(-0.5, 1)}])
