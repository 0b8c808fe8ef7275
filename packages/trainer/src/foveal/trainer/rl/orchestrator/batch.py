"""Scored groups -> the step's `RLBatch`: advantages, TrainingSamples with MMRefs, and the step's rollout metrics.

Each rollout that ran without error becomes one TrainingSample: its episode as one sequence (the last
turn's ids, the mask of the tokens the policy sampled, the server's logprobs at those tokens), its images
as MMRefs checked against the placeholder tokens, and its group-normalized advantage at every sampled
token. Failed rollouts (an error while sampling or scoring) are scored 0 and counted, but neither trained
on nor counted in their group's normalization: their 0 says nothing about the policy, and including it
would shift the advantages of the rollouts that did run.

The batch's policy version is the oldest weight version any trained turn was sampled with (the server
reports it with every completion), which the trainer checks against the async bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from foveal.configs.orchestrator import AdvantageKind
from foveal.verifiers.rollout import Rollout

from foveal.trainer.rl.advantages import grouped_advantages, token_advantages
from foveal.trainer.data.mm_refs import mm_refs_of
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask
from foveal.trainer.rl.orchestrator.collect import CollectedStep
from foveal.trainer.runs.rollouts import RLBatch, RolloutMetrics


class NothingToTrain(RuntimeError):
    """Every rollout of a step failed: the servers or the environments are broken, not the policy."""


def build_batch(
    step: int,
    collected: CollectedStep,
    advantage: AdvantageKind,
    image_token_id: int | None,
    served_version: int,
    weight_sync_seconds: float,
) -> RLBatch:
    """The batch the trainer trains on at `step`, from the step's scored groups."""
    live = [(index, rollout) for index, group in enumerate(collected.groups) for rollout in group.rollouts
            if not rollout.failed]  # fmt: skip
    if not live:
        first = next(r for g in collected.groups for r in g.rollouts).errors[0]
        raise NothingToTrain(f"step {step}: every rollout failed; the first: {first.type}: {first.message}")
    values = grouped_advantages([r.reward for _, r in live], [index for index, _ in live], advantage)
    samples = tuple(
        training_sample(f"step{step}/{collected.groups[index].label}/{rollout.example_id}/{rollout.sample_index}",
                        rollout, value, image_token_id)
        for (index, rollout), value in zip(live, values, strict=True)
    )  # fmt: skip
    versions = [turn.weight_version for _, rollout in live for turn in rollout.turns if turn.weight_version is not None]
    metrics = rollout_metrics(collected, weight_sync_seconds)
    return RLBatch(step=step, policy_version=min(versions, default=served_version), samples=samples, metrics=metrics)


def training_sample(sample_id: str, rollout: Rollout, advantage: float, image_token_id: int | None) -> TrainingSample:
    """One rollout as a TrainingSample (see the module doc); the episode must carry the server's logprobs."""
    sequence = rollout.sequence()
    if sequence.inference_logprobs is None:
        raise ValueError(f"rollout {sample_id}: turns without logprobs (sampling.logprobs must be on for RL)")
    weights = loss_weights_from_mask(sequence.loss_mask)
    return TrainingSample(
        sample_id=sample_id,
        token_ids=sequence.token_ids,
        loss_weights=weights,
        inference_logprobs=sequence.inference_logprobs,
        advantages=token_advantages(advantage, weights),
        mm_refs=mm_refs_of(sequence.token_ids, sequence.mm_refs, image_token_id, sample_id=sample_id),
    )


def rollout_metrics(collected: CollectedStep, weight_sync_seconds: float) -> RolloutMetrics:
    """Reward (failed rollouts count as 0), reward per environment, sampled tokens, failures and times."""
    rollouts = [rollout for group in collected.groups for rollout in group.rollouts]
    by_label: dict[str, list[float]] = {}
    for group in collected.groups:
        by_label.setdefault(group.label, []).extend(rollout.reward for rollout in group.rollouts)
    sampled = [sum(len(turn.completion_ids) for turn in rollout.turns) for rollout in rollouts]
    return RolloutMetrics(
        rollouts=len(rollouts),
        failed=sum(rollout.failed for rollout in rollouts),
        reward_mean=_mean([rollout.reward for rollout in rollouts]),
        reward_by_environment={label: _mean(rewards) for label, rewards in sorted(by_label.items())},
        completion_tokens_mean=_mean([float(count) for count in sampled]),
        inference_seconds=collected.inference_seconds,
        scoring_seconds=collected.scoring_seconds,
        weight_sync_seconds=weight_sync_seconds,
    )


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0

