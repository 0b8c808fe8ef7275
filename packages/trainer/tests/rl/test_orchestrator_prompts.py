"""The prompt mixture: deterministic per step, resumable at any step, weighted, and every row once per epoch."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.trainer.rl.orchestrator.prompts import MixtureError, PromptDraw, PromptSampler


def run_of(sampler: PromptSampler, steps: int) -> list[list[PromptDraw]]:
    return [sampler.step(step) for step in range(1, steps + 1)]


@given(st.integers(1, 40), st.integers(0, 10**6))
def test_a_restarted_sampler_draws_what_the_first_one_would_have(start: int, seed: int) -> None:
    whole = run_of(PromptSampler([5, 7], [1.0, 2.0], batch_size=3, seed=seed), 40)
    restarted = PromptSampler([5, 7], [1.0, 2.0], batch_size=3, seed=seed)
    assert [restarted.step(step) for step in range(start, 41)] == whole[start - 1 :]
    assert restarted.step(start) == whole[start - 1]  # asking again (going back) gives the same prompts


def test_each_row_is_used_once_per_epoch_and_the_epochs_are_reshuffled() -> None:
    sampler = PromptSampler([6], [1.0], batch_size=3, seed=1)
    rows = [draw.row for draws in run_of(sampler, 4) for draw in draws]
    assert sorted(rows[:6]) == list(range(6)) and sorted(rows[6:]) == list(range(6))
    assert rows[:6] != rows[6:]


def test_environments_are_drawn_by_weight_and_seeds_differ() -> None:
    draws = [d for s in run_of(PromptSampler([100, 100], [1.0, 3.0], batch_size=8, seed=0), 250) for d in s]
    share = Counter(draw.environment for draw in draws)[1] / len(draws)
    assert share == pytest.approx(0.75, abs=0.03)
    assert run_of(PromptSampler([100], [1.0], 4, seed=0), 3) != run_of(PromptSampler([100], [1.0], 4, seed=1), 3)
    warmup = PromptSampler([100], [1.0], 4, seed=0, stream="warmup")
    assert run_of(warmup, 3) != run_of(PromptSampler([100], [1.0], 4, seed=0), 3)


@pytest.mark.parametrize(
    ("sizes", "weights", "batch_size", "field"),
    [([], [], 2, "orchestrator.environments"), ([3, 0], [1.0, 1.0], 2, "orchestrator.environments[1]"),
     ([3], [1.0, 2.0], 2, "orchestrator.environments"), ([3], [1.0], 0, "batch_size")],
)  # fmt: skip
def test_an_impossible_mixture_is_refused_by_name(
    sizes: list[int], weights: list[float], batch_size: int, field: str
) -> None:
    with pytest.raises(MixtureError) as error:
        PromptSampler(sizes, weights, batch_size, seed=0)
    assert error.value.field == field
