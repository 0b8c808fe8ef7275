"""Rollouts in token space: what goes over the wire, what a Rollout records, limits, errors, concurrency.

The renderer, the image store and the environments are real; only the inference server is replaced, at
its process boundary, by a client that answers with scripted text tokenized by the real tokenizer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from foveal.renderers.contract import decode_mmraw
from foveal.renderers.inference.errors import InferenceError
from foveal.renderers.inference.wire import GenerateRequest, SamplingParams
from foveal.renderers.messages import Message, UserMessage
from foveal.renderers.rendering import Renderer
from foveal.verifiers.dataset import Dataset, Example
from foveal.verifiers.environment import EnvironmentConfigError, MultiTurnEnv, State
from foveal.verifiers.environments.shapes import load_environment as load_shapes
from foveal.verifiers.rewards import exact_match
from foveal.verifiers.rollout import Rollout, RolloutError
from foveal.verifiers.rubric import Rubric
from foveal.verifiers.token_policy import TokenPolicy

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_scripted import LOGPROB, ScriptedClient, replies  # noqa: E402

SAMPLING = SamplingParams(temperature=1.0, max_tokens=32, seed=7)


def shapes_answers(dataset: Dataset) -> dict[str, str]:
    return {example.example_id: example.answer for example in dataset}


def oracle(answers: dict[str, str], wrong: set[str] = frozenset()) -> Callable[[GenerateRequest, str | None], str]:
    """Answers each example right, from the session id the environment sends, except those in `wrong`."""

    def script(request: GenerateRequest, session: str | None) -> str:
        example_id = (session or "").split("/")[1]
        return "no idea" if example_id in wrong else answers[example_id]

    return script


def test_single_turn_rollout_sends_rendered_ids_and_records_them_verbatim(
    renderer_for: Callable[[str], Renderer],
) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = load_shapes(num_eval=4)
    examples = env.dataset("eval").take(4)
    client = ScriptedClient(renderer, oracle(shapes_answers(env.dataset("eval")), wrong={examples[1].example_id}))
    groups = asyncio.run(env.evaluate(examples, TokenPolicy(renderer, client), SAMPLING))

    assert [[r.reward for r in group] for group in groups] == [[1.0], [0.0], [1.0], [1.0]]
    rollout = groups[0][0]
    request, session = client.requests[[s for _, s in client.requests].index(f"shapes/{examples[0].example_id}/0")]
    expected = renderer.render(rollout.prompt, add_generation_prompt=True)
    (turn,) = rollout.turns
    assert turn.prompt_ids == request.prompt_token_ids == expected.token_ids
    assert [decode_mmraw(ref) for ref in request.image_refs] == [image.descriptor for image in turn.images]
    assert [(i.offset, i.length) for i in turn.images] == [(i.offset, i.length) for i in expected.images]
    assert (
        turn.completion_ids == tuple(renderer.tokenizer(examples[0].answer)["input_ids"]) + renderer.stop_token_ids[:1]
    )
    assert turn.completion_logprobs == tuple(LOGPROB for _ in turn.completion_ids)
    assert turn.loss_mask == (0,) * len(turn.prompt_ids) + (1,) * len(turn.completion_ids)
    assert turn.weight_version == 3 and turn.finish_reason == "stop"
    assert rollout.stop_reason == "done" and rollout.completion[0].text() == examples[0].answer
    assert [a.uri for a in rollout.images] == [turn.images[0].descriptor.raw_image_uri]
    assert rollout.metrics == {"turns": 1.0, "exact_match": 1.0, "answer_mentioned": 1.0}


def test_rollout_is_json_and_its_sequence_lines_up_with_the_tokens(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = load_shapes(num_eval=1)
    (example,) = env.dataset("eval").take(1)
    client = ScriptedClient(renderer, replies("red"))
    rollout = asyncio.run(env.rollout(example, TokenPolicy(renderer, client), SAMPLING))
    again = Rollout.model_validate_json(rollout.model_dump_json())
    assert again == rollout
    sequence = again.sequence()
    turn = rollout.turns[0]
    assert sequence.token_ids == turn.prompt_ids + turn.completion_ids
    assert sequence.loss_mask == turn.loss_mask
    assert sequence.inference_logprobs == (0.0,) * len(turn.prompt_ids) + turn.completion_logprobs
    (image,) = sequence.mm_refs
    span = sequence.token_ids[image.offset : image.offset + image.length]
    assert set(span) == {renderer.image_token_id} and image.length == image.descriptor.payload["num_placeholder_tokens"]


def test_a_failing_request_is_recorded_on_its_rollout_and_scored_zero(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = load_shapes(num_eval=3)
    examples = env.dataset("eval").take(3)
    answers = shapes_answers(env.dataset("eval"))

    def script(request: GenerateRequest, session: str | None) -> str:
        if examples[1].example_id in (session or ""):
            raise InferenceError(
                "http://127.0.0.1:1/v1/generate", 400, "too_long", "prompt too long", "prompt_token_ids"
            )
        return oracle(answers)(request, session)

    groups = asyncio.run(env.evaluate(examples, TokenPolicy(renderer, ScriptedClient(renderer, script)), SAMPLING))
    ok, failed, ok_too = (group[0] for group in groups)
    assert ok.reward == ok_too.reward == 1.0
    assert failed.reward == 0.0 and failed.stop_reason == "error" and failed.turns == ()
    assert failed.errors[0].type == "InferenceError" and "too_long" in failed.errors[0].message
    assert failed.metrics["exact_match"] == 0.0
    Rollout.model_validate_json(failed.model_dump_json())  # a failed rollout is still a valid record


def test_concurrency_is_bounded_by_max_concurrent(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = load_shapes(num_eval=6)
    client = ScriptedClient(renderer, replies("red"), delay_s=0.02)
    groups = asyncio.run(
        env.evaluate(
            env.dataset("eval").take(6),
            TokenPolicy(renderer, client),
            SAMPLING,
            rollouts_per_example=2,
            max_concurrent=3,
        )
    )
    assert len(client.requests) == 12 and [len(g) for g in groups] == [2] * 6
    assert client.most_in_flight == 3
    with pytest.raises(EnvironmentConfigError, match="max_concurrent"):
        asyncio.run(env.evaluate([], TokenPolicy(renderer, client), SAMPLING, max_concurrent=0))


def test_each_rollout_gets_its_own_reproducible_seed(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = load_shapes(num_eval=2)
    examples = env.dataset("eval").take(2)

    def seeds() -> dict[str | None, int | None]:
        client = ScriptedClient(renderer, replies("red"))
        asyncio.run(env.evaluate(examples, TokenPolicy(renderer, client), SAMPLING, rollouts_per_example=2))
        return {session: request.sampling.seed for request, session in client.requests}

    first = seeds()
    assert first == seeds() and len(set(first.values())) == 4


class GuessEnv(MultiTurnEnv):
    """Guess a number; the environment answers "higher" or "lower" until the guess is right."""

    async def is_done(self, messages: Sequence[Message], state: State) -> bool:
        return messages[-1].text().strip() == state.example.answer

    async def env_response(self, messages: Sequence[Message], state: State) -> list[Message]:
        guess = int(messages[-1].text().strip())
        return [UserMessage(content="higher" if guess < int(state.example.answer) else "lower")]


def guess_env(**limits: int) -> GuessEnv:
    example = Example(example_id="guess", prompt=[UserMessage(content="Guess my number (1-9).")], answer="7")
    return GuessEnv(name="guess", eval=Dataset.from_examples([example]), rubric=Rubric([exact_match]), **limits)


def test_multi_turn_episode_is_one_exact_sequence(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = guess_env()
    policy = TokenPolicy(renderer, ScriptedClient(renderer, replies("5", "8", "7")))
    unscored = asyncio.run(env.rollout(env.dataset("eval")[0], policy, SAMPLING, score=False))
    assert unscored.reward == 0.0 and "exact_match" not in unscored.metrics
    client = ScriptedClient(renderer, replies("5", "8", "7"))
    rollout = asyncio.run(env.rollout(env.dataset("eval")[0], TokenPolicy(renderer, client), SAMPLING))
    assert rollout.stop_reason == "done" and rollout.reward == 1.0 and len(rollout.turns) == 3
    assert [m.text() for m in rollout.completion] == ["5", "higher", "8", "lower", "7"]
    first, second, third = rollout.turns
    assert (
        second.prompt_ids[: len(first.prompt_ids) + len(first.completion_ids)]
        == first.prompt_ids + first.completion_ids
    )
    sequence = rollout.sequence()
    trained = [t for t, m in zip(sequence.token_ids, sequence.loss_mask) if m]
    assert trained == [*first.completion_ids, *second.completion_ids, *third.completion_ids]
    assert sequence.token_ids == tuple(r.prompt_token_ids for r, _ in client.requests)[-1] + third.completion_ids
    rendered = renderer.render([*rollout.prompt, *rollout.completion]).token_ids
    # What the model sampled is what the template writes here, up to the separator after the last turn.
    assert rendered[: len(sequence.token_ids)] == sequence.token_ids
    assert renderer.tokenizer.decode(rendered[len(sequence.token_ids) :]) == "\n"


def test_turn_limit_ends_the_episode(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = guess_env(max_turns=2)
    rollout = asyncio.run(
        env.rollout(env.dataset("eval")[0], TokenPolicy(renderer, ScriptedClient(renderer, replies("1"))), SAMPLING)
    )
    assert rollout.stop_reason == "max_turns" and len(rollout.turns) == 2 and rollout.reward == 0.0


def test_token_limit_shrinks_the_budget_then_ends_the_episode(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    prompt_length = len(renderer.render([UserMessage(content="Guess my number (1-9).")], add_generation_prompt=True))
    limit = prompt_length + 30
    env = guess_env(max_total_tokens=limit)
    client = ScriptedClient(renderer, replies("1"))
    rollout = asyncio.run(env.rollout(env.dataset("eval")[0], TokenPolicy(renderer, client), SAMPLING))
    budgets = [request.sampling.max_tokens for request, _ in client.requests]
    assert budgets == [min(32, limit - len(request.prompt_token_ids)) for request, _ in client.requests]
    assert len(budgets) >= 2 and budgets[0] == 30 and rollout.stop_reason == "max_tokens"
    last = rollout.turns[-1]
    assert len(last.prompt_ids) + len(last.completion_ids) <= limit


def test_a_cut_off_reply_ends_the_episode_with_length(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = guess_env()
    policy = TokenPolicy(renderer, ScriptedClient(renderer, replies("1 2 3 4 5 6 7 8 9 10 11 12")))
    rollout = asyncio.run(env.rollout(env.dataset("eval")[0], policy, SAMPLING.model_copy(update={"max_tokens": 4})))
    assert rollout.stop_reason == "length" and rollout.turns[0].finish_reason == "length"
    assert len(rollout.turns[0].completion_ids) == 4


def test_sequence_refuses_turns_that_do_not_extend_each_other(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    env = guess_env()
    rollout = asyncio.run(
        env.rollout(
            env.dataset("eval")[0], TokenPolicy(renderer, ScriptedClient(renderer, replies("5", "7"))), SAMPLING
        )
    )
    first, second = rollout.turns
    broken = rollout.model_copy(
        update={"turns": (first, second.model_copy(update={"prompt_ids": (1, *second.prompt_ids[1:])}))}
    )
    with pytest.raises(RolloutError, match=r"turns\[1\].prompt_ids"):
        broken.sequence()
