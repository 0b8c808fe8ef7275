"""Rubric: weighted sums, arguments by name, sync and async functions, groups, and failures scored 0."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from foveal.renderers.messages import AssistantMessage, UserMessage
from foveal.verifiers.parsers import TaggedParser
from foveal.verifiers.rewards import exact_match
from foveal.verifiers.rollout import ErrorRecord, Rollout
from foveal.verifiers.rubric import Rubric, RubricError


def rollout(reply: str, answer: str = "4", index: int = 0, **fields: object) -> Rollout:
    return Rollout(
        environment="test",
        example_id="e1",
        sample_index=index,
        prompt=(UserMessage(content="What is 2 + 2?"),),
        completion=(AssistantMessage(content=reply),),
        answer=answer,
        **fields,
    )


def score(rubric: Rubric, *rollouts: Rollout) -> list[Rollout]:
    return asyncio.run(rubric.score_group(rollouts))


def test_reward_is_the_weighted_sum_and_every_function_is_a_metric() -> None:
    def length_penalty(completion: str) -> float:
        return -len(completion) / 100

    async def is_four(parsed: str | None) -> float:
        await asyncio.sleep(0)
        return float(parsed == "4")

    rubric = Rubric([exact_match, length_penalty], weights=[2.0, 0.5], parser=TaggedParser()).add(is_four, weight=0)
    (scored,) = score(rubric, rollout("<answer>4</answer>"))
    assert scored.metrics == {"exact_match": 1.0, "length_penalty": -0.18, "is_four": 1.0}
    assert scored.reward == pytest.approx(2.0 - 0.09)


def test_functions_receive_only_the_arguments_they_name() -> None:
    seen: dict[str, object] = {}

    def everything(completion, parsed, answer, prompt, messages, info, rollout, parser):  # type: ignore[no-untyped-def]
        seen.update(locals())
        return 1

    def catch_all(**kwargs: object) -> bool:
        seen["kwargs"] = sorted(kwargs)
        return True

    rubric = Rubric([everything, catch_all], parser=TaggedParser())
    (scored,) = score(rubric, rollout("<answer>5</answer>", info={"k": 1}))
    assert seen["completion"] == "<answer>5</answer>" and seen["parsed"] == "5" and seen["answer"] == "4"
    assert seen["info"] == {"k": 1} and seen["rollout"].example_id == "e1"  # type: ignore[attr-defined]
    assert seen["kwargs"] == sorted(
        ["completion", "parsed", "answer", "prompt", "messages", "info", "rollout", "parser"]
    )
    assert scored.reward == 2.0  # a bool counts as 0/1


def test_a_function_with_an_unknown_required_parameter_is_refused_up_front() -> None:
    def needs_score(completion: str, score: float) -> float:
        return score

    with pytest.raises(RubricError, match="needs_score.*score"):
        Rubric([needs_score])
    with pytest.raises(RubricError, match="weight"):
        Rubric([exact_match], weights=[1.0, 2.0])
    with pytest.raises(RubricError, match="name"):
        Rubric([exact_match, exact_match])
    with pytest.raises(RubricError, match="finite"):
        Rubric().add(exact_match, weight=float("nan"))


def test_a_raising_or_non_numeric_function_scores_the_rollout_zero_and_is_recorded() -> None:
    def explodes(completion: str) -> float:
        if "boom" in completion:
            raise RuntimeError("reward exploded")
        return 1.0

    def not_a_number(completion: str) -> object:
        return "high" if "text" in completion else 1.0

    rubric = Rubric([explodes, not_a_number])
    fine, boom, text = score(rubric, rollout("ok"), rollout("boom", index=1), rollout("text", index=2))
    assert fine.reward == 2.0 and not fine.errors
    assert boom.reward == 0.0 and boom.metrics["explodes"] == 0.0 and boom.metrics["not_a_number"] == 1.0
    assert [(e.stage, e.type, e.message) for e in boom.errors] == [("scoring", "RuntimeError", "reward exploded")]
    assert text.reward == 0.0 and text.errors[0].type == "RubricError" and "finite number" in text.errors[0].message


def test_failed_rollouts_are_not_scored_and_get_zero_metrics() -> None:
    calls: list[str] = []

    def counted(completion: str) -> float:
        calls.append(completion)
        return 1.0

    failed = rollout(
        "", errors=(ErrorRecord(stage="rollout", type="InferenceError", message="down"),), stop_reason="error"
    )
    good, bad = score(Rubric([counted]), rollout("fine"), failed)
    assert calls == ["fine"]
    assert good.reward == 1.0 and bad.reward == 0.0 and bad.metrics == {"counted": 0.0}
    assert bad.errors == failed.errors


def test_group_functions_see_the_whole_group() -> None:
    def shortest_correct(
        completions: Sequence[str], parsed: Sequence[str | None], answers: Sequence[str]
    ) -> list[float]:
        correct = [len(c) if p == a else None for c, p, a in zip(completions, parsed, answers)]
        best = min((n for n in correct if n is not None), default=None)
        return [float(n is not None and n == best) for n in correct]

    rubric = Rubric([exact_match], parser=TaggedParser()).add_group(shortest_correct, weight=0.5)
    group = [
        rollout("<answer>4</answer> because", index=0),
        rollout("<answer>4</answer>", index=1),
        rollout("5", index=2),
    ]
    rewards = [r.reward for r in score(rubric, *group)]
    assert rewards == [1.0, 1.5, 0.0]


def test_a_group_function_returning_the_wrong_count_fails_the_group() -> None:
    rubric = Rubric().add_group(lambda rollouts: [1.0], name="one_value")
    scored = score(rubric, rollout("a"), rollout("b", index=1))
    assert all(r.reward == 0.0 and "2 numbers" in r.errors[0].message for r in scored)
