"""Sampling and scoring one step's groups of rollouts through the environments' rollout API.

Every prompt of the step gets `rollouts_per_prompt` episodes (`Environment.rollout`, unscored), with at
most `max_concurrent` episodes in flight across the whole step; then each group is scored together by
its environment's rubric (group reward functions see the whole group). The two phases are timed apart,
so the step's metrics split inference from scoring. An episode that raises is recorded on its rollout
by the environment and scored 0 by the rubric: one failure never ends the step.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from foveal.renderers.inference.wire import SamplingParams
from foveal.verifiers.environment import Environment
from foveal.verifiers.policy import Policy
from foveal.verifiers.rollout import Rollout

from foveal.trainer.rl.orchestrator.mixture import Mixture
from foveal.trainer.rl.orchestrator.prompts import PromptDraw


@dataclass(frozen=True)
class Group:
    """The scored rollouts of one prompt, and the label of the environment it came from."""

    label: str
    rollouts: tuple[Rollout, ...]


@dataclass(frozen=True)
class CollectedStep:
    """A step's scored groups, in prompt order, and where the time went."""

    groups: tuple[Group, ...]
    inference_seconds: float
    scoring_seconds: float


def step_sampling(temperature: float, max_tokens: int, seed: int, step: int) -> SamplingParams:
    """Sampling settings of a step: a seed per (run seed, step), from which each episode derives its own."""
    step_seed = zlib.crc32(f"foveal.rollouts:{seed}:{step}".encode()) & 0x7FFFFFFF
    return SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=step_seed, logprobs=True)


async def collect_step(
    mixture: Mixture,
    draws: Sequence[PromptDraw],
    policy: Policy,
    sampling: SamplingParams,
    rollouts_per_prompt: int,
    max_concurrent: int,
) -> CollectedStep:
    """Sample every group of the step, then score each group with its environment's rubric."""
    limit = asyncio.Semaphore(max_concurrent)
    started = time.perf_counter()
    sampled = await asyncio.gather(
        *(
            sample_group(mixture.environments[draw.environment], draw.row, policy, sampling, rollouts_per_prompt, limit)
            for draw in draws
        )
    )
    sampled_at = time.perf_counter()
    scored = await asyncio.gather(
        *(mixture.environments[draw.environment].rubric.score_group(group) for draw, group in zip(draws, sampled))
    )
    groups = tuple(
        Group(mixture.labels[draw.environment], tuple(group)) for draw, group in zip(draws, scored, strict=True)
    )
    return CollectedStep(groups, sampled_at - started, time.perf_counter() - sampled_at)


async def sample_group(
    environment: Environment,
    row: int,
    policy: Policy,
    sampling: SamplingParams,
    count: int,
    limit: asyncio.Semaphore,
) -> list[Rollout]:
    """`count` unscored episodes of row `row` of the environment's train split."""
    example = environment.dataset("train")[row]

    async def one(index: int) -> Rollout:
        async with limit:
            return await environment.rollout(example, policy, sampling, sample_index=index, score=False)

    return list(await asyncio.gather(*(one(index) for index in range(count))))
