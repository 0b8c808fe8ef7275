"""Eval statistics: pass@k matches counting subsets, the standard error is over examples."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.renderers.messages import AssistantMessage, UserMessage
from foveal.verifiers.eval.summary import k_values, mean_and_stderr, pass_at_k, summarize
from foveal.verifiers.rollout import ErrorRecord, Rollout


@given(st.integers(1, 10).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_share_of_k_subsets_with_a_pass(case: tuple[int, int, int]) -> None:
    n, c, k = case
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts() -> None:
    for n, c, k in ((4, 5, 1), (4, 1, 0), (4, 1, 5)):
        with pytest.raises(ValueError, match="pass_at_k"):
            pass_at_k(n, c, k)


def test_k_values_are_powers_of_two_and_n() -> None:
    assert k_values(1) == [1] and k_values(4) == [1, 2, 4] and k_values(6) == [1, 2, 4, 6]


def rollout(example: int, index: int, reward: float, failed: bool = False) -> Rollout:
    return Rollout(
        environment="env",
        example_id=f"e{example}",
        sample_index=index,
        prompt=(UserMessage(content="q"),),
        completion=(AssistantMessage(content="a"),),
        reward=reward,
        metrics={"exact_match": reward, **({} if example else {"only_first": 2.0})},
        stop_reason="error" if failed else "done",
        errors=(ErrorRecord(stage="rollout", type="E", message="x"),) if failed else (),
    )


def test_summary_of_groups() -> None:
    groups = [
        [rollout(0, 0, 1.0), rollout(0, 1, 0.0)],
        [rollout(1, 0, 0.0), rollout(1, 1, 0.0, failed=True)],
        [rollout(2, 0, 1.0), rollout(2, 1, 1.0)],
    ]
    summary = summarize(groups, model="m", split="eval", seconds=1.5)
    assert summary.reward_mean == pytest.approx(0.5)
    per_example = [0.5, 0.0, 1.0]
    assert summary.reward_stderr == pytest.approx(math.sqrt(0.25 / 3))  # sample variance 0.25 over 3 examples
    assert mean_and_stderr(per_example)[1] == summary.reward_stderr
    assert summary.pass_at_k == {1: pytest.approx(0.5), 2: pytest.approx(2 / 3)}
    assert summary.metrics == {"exact_match": 0.5, "only_first": 2.0}
    assert summary.failed == 1 and summary.stop_reasons == {"done": 5, "error": 1}
    assert summary.num_rollouts == 6 and summary.rollouts_per_example == 2
    assert summarize(groups[:1], model="m", split="eval").reward_stderr is None


def test_summary_refuses_ragged_groups() -> None:
    with pytest.raises(ValueError, match="equal"):
        summarize([[rollout(0, 0, 1.0)], []], model="m", split="eval")
