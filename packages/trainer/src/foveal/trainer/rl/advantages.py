"""Group-relative advantages: each rollout's reward compared with the other rollouts of the same prompt.

`orchestrator.advantage` picks the normalization of one prompt's group of rewards r_1..r_G:
  - `group_mean`:     A_i = r_i - mean(r)                       (Dr. GRPO: no division by the spread)
  - `group_mean_std`: A_i = (r_i - mean(r)) / (std(r) + eps)    (GRPO), std over the group (population, ddof 0)
  - `batch_mean_std`: A_i = (r_i - mean(R)) / (std(R) + eps)    over every rollout R of the step (REINFORCE++)
  - `none`:           A_i = r_i                                 (raw reward, e.g. for a learned baseline)
A group whose rewards are all equal teaches nothing relative to itself: its advantages are exactly 0 under
both group normalizations (tested for equality, so float rounding of the mean never leaks tiny values).
Under `batch_mean_std` such a group still learns: a prompt every sample gets wrong is pushed away from those
answers when the rest of the step does better, which is what pulls a policy out of a confident mistake that
group normalization cannot see (all wrong alike, zero advantage).

A rollout's advantage is spread over the tokens it trains on (`token_advantages`): the value at every
token with a positive loss weight, 0 elsewhere, aligned with `token_ids` like every per-token field of a
`TrainingSample`. Pure Python, no torch: the orchestrator computes these without a model.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import get_args

from foveal.configs.orchestrator import AdvantageKind

ADVANTAGE_KINDS: tuple[AdvantageKind, ...] = get_args(AdvantageKind)
STD_EPS = 1e-6
"""Added to the group's standard deviation: bounds |A| by spread / eps for nearly-equal rewards."""


class AdvantageError(ValueError):
    """Rewards or groups that cannot be normalized; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


def group_advantages(rewards: Sequence[float], kind: AdvantageKind, eps: float = STD_EPS) -> list[float]:
    """Advantages of one prompt's group of rewards, in the same order."""
    _check_rewards(rewards)
    if kind not in ADVANTAGE_KINDS:
        raise AdvantageError("orchestrator.advantage", kind, f"one of {list(ADVANTAGE_KINDS)}")
    if kind == "none":
        return [float(r) for r in rewards]
    if min(rewards) == max(rewards):
        return [0.0] * len(rewards)
    mean = math.fsum(rewards) / len(rewards)
    centered = [r - mean for r in rewards]
    if kind == "group_mean":
        return centered
    # group_mean_std, or batch_mean_std with the whole step passed as one group.
    std = math.sqrt(math.fsum(c * c for c in centered) / len(centered))
    return [c / (std + eps) for c in centered]


def grouped_advantages(
    rewards: Sequence[float], groups: Sequence[Hashable], kind: AdvantageKind, eps: float = STD_EPS
) -> list[float]:
    """Advantages of many rollouts at once, each normalized within its group (`groups[i]` names rollout i's),
    or over all of them for `batch_mean_std`."""
    if len(groups) != len(rewards):
        raise AdvantageError("groups", len(groups), f"one group key per reward ({len(rewards)})")
    if kind == "batch_mean_std":
        groups = [None] * len(rewards)
    members: dict[Hashable, list[int]] = {}
    for index, key in enumerate(groups):
        members.setdefault(key, []).append(index)
    out = [0.0] * len(rewards)
    for indices in members.values():
        for index, value in zip(indices, group_advantages([rewards[i] for i in indices], kind, eps), strict=True):
            out[index] = value
    return out


def token_advantages(advantage: float, loss_weights: Sequence[float]) -> tuple[float, ...]:
    """`advantage` at each token that carries loss, 0 elsewhere: the `advantages` field of a TrainingSample."""
    if not math.isfinite(advantage):
        raise AdvantageError("advantage", advantage, "a finite number")
    return tuple(float(advantage) if weight > 0 else 0.0 for weight in loss_weights)


def _check_rewards(rewards: Sequence[float]) -> None:
    if not rewards:
        raise AdvantageError("rewards", [], "at least one reward per group")
    for index, reward in enumerate(rewards):
        if not math.isfinite(reward):
            raise AdvantageError(f"rewards[{index}]", reward, "a finite number")
