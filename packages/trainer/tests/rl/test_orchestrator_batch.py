"""Scored groups -> RLBatch: per-group advantages on sampled tokens, failures scored 0 but not trained on."""

from __future__ import annotations

import pytest

from foveal.trainer.rl.orchestrator.batch import NothingToTrain, build_batch, training_sample
from foveal.trainer.rl.orchestrator.collect import CollectedStep, Group, step_sampling
from foveal.trainer.runs.rollouts import RLBatch
from foveal.verifiers.rollout import ErrorRecord, Rollout, Turn

PROMPT = (5, 6, 7)


def rollout(example: str, index: int, reward: float, completion: tuple[int, ...] = (11, 12), version: int = 3,
            failed: bool = False) -> Rollout:  # fmt: skip
    turn = Turn(
        prompt_ids=PROMPT,
        completion_ids=completion,
        completion_logprobs=tuple(-0.5 - i for i in range(len(completion))),
        loss_mask=(0,) * len(PROMPT) + (1,) * len(completion),
        text="x",
        finish_reason="stop",
        weight_version=version,
    )
    errors = (ErrorRecord(stage="scoring", type="ValueError", message="bad"),) if failed else ()
    return Rollout(environment="env", example_id=example, sample_index=index, prompt=[{"role": "user", "content": "q"}],
                   turns=(turn,), reward=0.0 if failed else reward, errors=errors)  # fmt: skip


def collected(*groups: Group) -> CollectedStep:
    return CollectedStep(groups=groups, inference_seconds=1.5, scoring_seconds=0.25)


def test_advantages_are_normalized_within_each_group_and_spread_over_sampled_tokens() -> None:
    step = collected(
        Group("shapes", (rollout("a", 0, 1.0), rollout("a", 1, 0.0))),
        Group("charts", (rollout("b", 0, 1.0, version=2), rollout("b", 1, 1.0))),
    )
    batch = build_batch(4, step, "group_mean", image_token_id=None, served_version=3, weight_sync_seconds=0.5)
    assert isinstance(RLBatch.from_msgpack(batch.to_msgpack()), RLBatch)
    assert [s.sample_id for s in batch.samples] == ["step4/shapes/a/0", "step4/shapes/a/1", "step4/charts/b/0",
                                                   "step4/charts/b/1"]  # fmt: skip
    assert [s.advantages for s in batch.samples] == [(0, 0, 0, 0.5, 0.5), (0, 0, 0, -0.5, -0.5), (0,) * 5, (0,) * 5]
    first = batch.samples[0]
    assert first.token_ids == (5, 6, 7, 11, 12) and first.loss_weights == (0, 0, 0, 1, 1)
    assert first.inference_logprobs == (0.0, 0.0, 0.0, -0.5, -1.5)
    assert batch.policy_version == 2  # the oldest weights that sampled any trained turn
    metrics = batch.metrics
    assert (metrics.rollouts, metrics.failed, metrics.reward_mean) == (4, 0, 0.75)
    assert metrics.reward_by_environment == {"charts": 1.0, "shapes": 0.5}
    assert (metrics.inference_seconds, metrics.scoring_seconds, metrics.weight_sync_seconds) == (1.5, 0.25, 0.5)
    assert metrics.completion_tokens_mean == 2.0


def test_failed_rollouts_score_zero_and_stay_out_of_training_and_normalization() -> None:
    group = Group("shapes", (rollout("a", 0, 1.0, version=0), rollout("a", 1, 0.0, version=0),
                             rollout("a", 2, 1.0, version=0, failed=True)))  # fmt: skip
    batch = build_batch(1, collected(group), "group_mean", None, served_version=0, weight_sync_seconds=0.0)
    assert [s.sample_id for s in batch.samples] == ["step1/shapes/a/0", "step1/shapes/a/1"]
    assert [s.advantages[-1] for s in batch.samples] == [0.5, -0.5]  # the failed one did not shift the mean
    assert batch.metrics.failed == 1 and batch.metrics.reward_mean == pytest.approx(1 / 3)


def test_a_step_where_every_rollout_failed_is_an_error_naming_the_first_failure() -> None:
    group = Group("shapes", (rollout("a", 0, 0.0, failed=True), rollout("a", 1, 0.0, failed=True)))
    with pytest.raises(NothingToTrain, match="step 7: every rollout failed; the first: ValueError: bad"):
        build_batch(7, collected(group), "group_mean_std", None, served_version=0, weight_sync_seconds=0.0)


def test_an_episode_without_logprobs_cannot_become_a_training_sample() -> None:
    plain = rollout("a", 0, 1.0)
    turn = plain.turns[0].model_copy(update={"completion_logprobs": None})
    with pytest.raises(ValueError, match="without logprobs"):
        training_sample("s", plain.model_copy(update={"turns": (turn,)}), 1.0, None)


def test_each_step_samples_with_its_own_seed() -> None:
    seeds = {step_sampling(1.0, 8, seed=0, step=step).seed for step in range(1, 50)}
    assert len(seeds) == 49 and step_sampling(1.0, 8, 0, 3) == step_sampling(1.0, 8, 0, 3)
    assert step_sampling(1.0, 8, seed=-5, step=1).logprobs
