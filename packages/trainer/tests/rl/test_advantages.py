"""Group-normalized advantages: hand examples, degenerate groups, group independence, and the token broadcast."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.trainer.rl.advantages import AdvantageError, group_advantages, grouped_advantages, token_advantages

rewards_st = st.lists(st.floats(-100, 100, allow_nan=False, allow_infinity=False), min_size=1, max_size=16)


def test_hand_computed_group() -> None:
    rewards = [1.0, 0.0, 0.0, 1.0]
    assert group_advantages(rewards, "none") == rewards
    assert group_advantages(rewards, "group_mean") == [0.5, -0.5, -0.5, 0.5]
    assert group_advantages(rewards, "group_mean_std") == pytest.approx([1.0, -1.0, -1.0, 1.0], rel=1e-5)


@pytest.mark.parametrize("kind", ["group_mean", "group_mean_std"])
def test_a_group_of_equal_rewards_gets_exact_zeros(kind: str) -> None:
    assert group_advantages([0.1, 0.1, 0.1], kind) == [0.0, 0.0, 0.0]
    assert group_advantages([7.0], kind) == [0.0]


@given(rewards_st)
def test_group_mean_centres_the_group(rewards: list[float]) -> None:
    advantages = group_advantages(rewards, "group_mean")
    assert math.fsum(advantages) == pytest.approx(0.0, abs=1e-9 * max(1.0, max(map(abs, rewards))))
    steps = zip(advantages, advantages[1:], rewards, rewards[1:])
    assert all(a - b == pytest.approx(r - s, abs=1e-9) for a, b, r, s in steps)


@given(rewards_st.filter(lambda r: max(r) - min(r) > 1e-2))
def test_group_mean_std_has_zero_mean_and_unit_spread(rewards: list[float]) -> None:
    advantages = group_advantages(rewards, "group_mean_std")
    assert statistics.fmean(advantages) == pytest.approx(0.0, abs=1e-7)
    assert statistics.pstdev(advantages) == pytest.approx(1.0, rel=1e-3)


@given(rewards_st, st.floats(0.5, 20), st.floats(-50, 50))
def test_group_mean_std_ignores_an_affine_change_of_rewards(rewards: list[float], scale: float, shift: float) -> None:
    if max(rewards) - min(rewards) < 1e-2:
        return
    # eps = 0: the normalization itself is affine-invariant; eps only bounds near-constant groups.
    moved = group_advantages([scale * r + shift for r in rewards], "group_mean_std", eps=0.0)
    assert moved == pytest.approx(group_advantages(rewards, "group_mean_std", eps=0.0), abs=1e-6)


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(-10, 10, allow_nan=False)), min_size=1, max_size=24))
def test_each_group_is_normalized_on_its_own(rows: list[tuple[int, float]]) -> None:
    groups, rewards = [g for g, _ in rows], [r for _, r in rows]
    got = grouped_advantages(rewards, groups, "group_mean_std")
    for key in set(groups):
        members = [i for i, g in enumerate(groups) if g == key]
        assert [got[i] for i in members] == group_advantages([rewards[i] for i in members], "group_mean_std")


def test_the_advantage_lands_on_loss_tokens_only() -> None:
    assert token_advantages(-0.5, [0.0, 0.0, 1.0, 0.5, 0.0]) == (0.0, 0.0, -0.5, -0.5, 0.0)


@pytest.mark.parametrize(
    ("call", "field", "value", "expected"),
    [
        (lambda: group_advantages([], "group_mean"), "rewards", [], "at least one reward per group"),
        (lambda: group_advantages([1.0, math.inf], "group_mean"), "rewards[1]", math.inf, "a finite number"),
        (lambda: group_advantages([1.0], "rank"), "orchestrator.advantage", "rank",
         "one of ['group_mean', 'group_mean_std', 'batch_mean_std', 'none']"),
        (lambda: grouped_advantages([1.0, 2.0], ["a"], "none"), "groups", 1, "one group key per reward (2)"),
        (lambda: token_advantages(math.inf, [1.0]), "advantage", math.inf, "a finite number"),
    ],
    ids=["empty-group", "infinite-reward", "unknown-kind", "groups-short", "infinite-advantage"],
)  # fmt: skip
def test_bad_inputs_name_the_field_the_value_and_what_was_expected(
    call: Callable[[], object], field: str, value: object, expected: str
) -> None:
    with pytest.raises(AdvantageError) as caught:
        call()
    assert (caught.value.field, caught.value.value, caught.value.expected) == (field, value, expected)
    assert str(caught.value) == f"{field}: {expected} (got {value!r})"


def test_a_nearly_constant_group_keeps_its_signs_and_eps_bounds_it() -> None:
    """Rewards 1e-6 apart have std 5e-7; eps = 1e-6 is added to it, so each advantage is +-5e-7 / 1.5e-6 = +-1/3
    (subtracting it would flip the signs, dropping it would give +-1)."""
    assert group_advantages([0.0, 1e-6], "group_mean_std") == pytest.approx([-1 / 3, 1 / 3], rel=1e-6)


def test_batch_mean_std_gives_an_all_wrong_group_negative_advantages() -> None:
    """Two prompts: one half right, one all wrong. Group normalization leaves the all-wrong group at 0; the batch
    baseline (mean 0.25, std sqrt(3)/4) pushes its answers down and the right answers up."""
    rewards, groups = [1.0, 0.0, 0.0, 0.0], ["a", "a", "b", "b"]
    assert grouped_advantages(rewards, groups, "group_mean_std")[2:] == [0.0, 0.0]
    got = grouped_advantages(rewards, groups, "batch_mean_std", eps=0.0)
    std = math.sqrt(3) / 4
    assert got == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std], rel=1e-12)


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(-10, 10, allow_nan=False)), min_size=1, max_size=24))
def test_batch_mean_std_ignores_the_groups(rows: list[tuple[int, float]]) -> None:
    groups, rewards = [g for g, _ in rows], [r for _, r in rows]
    got = grouped_advantages(rewards, groups, "batch_mean_std")
    assert got == group_advantages(rewards, "group_mean_std")
    assert got == grouped_advantages(rewards, [0] * len(rewards), "batch_mean_std")
