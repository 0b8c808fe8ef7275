"""The asynchrony bound: exact semantics of `can_produce`, the trainer's re-check, and a simulated run that keeps it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.trainer.rl.sync import SyncError, can_produce, check_policy_lag, policy_lag


@pytest.mark.parametrize(
    ("max_async_level", "trainer_step", "producible"),
    [
        (0, 0, [1]),  # synchronous: batch s waits for step s - 1
        (0, 4, [1, 2, 3, 4, 5]),
        (1, 0, [1, 2]),  # batch 2 is sampled while the trainer trains step 1
        (1, 3, [1, 2, 3, 4, 5]),
        (2, 0, [1, 2, 3]),
    ],
)
def test_batches_a_trainer_step_allows(max_async_level: int, trainer_step: int, producible: list[int]) -> None:
    assert [s for s in range(1, 9) if can_produce(s, trainer_step, max_async_level)] == producible


@given(st.integers(1, 1000), st.integers(0, 1000), st.integers(0, 50))
def test_a_batch_may_be_produced_exactly_when_its_lag_stays_within_the_bound(step: int, version: int, k: int) -> None:
    if version >= step:  # weights from the step itself or later cannot have sampled its batch
        return
    assert can_produce(step, version, k) == (policy_lag(step, version) <= k)
    if can_produce(step, version, k):
        assert check_policy_lag(step, version, k) == policy_lag(step, version)
    else:
        with pytest.raises(SyncError, match=f"max_async_level = {k}"):
            check_policy_lag(step, version, k)


@pytest.mark.parametrize("max_async_level", [0, 1, 3])
@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_run_never_trains_beyond_the_bound_and_never_stalls(max_async_level: int, seed: int) -> None:
    """Orchestrator and trainer advance in a random interleaving, each only when the protocol lets it."""
    chooser = random.Random(seed)
    trainer_step, produced, versions, lags = 0, 0, {}, []
    steps = 30
    while trainer_step < steps:
        can_sample = produced < steps and can_produce(produced + 1, trainer_step, max_async_level)
        can_train = produced > trainer_step
        assert can_sample or can_train, "deadlock"
        if can_sample and (not can_train or chooser.random() < 0.5):
            produced += 1
            versions[produced] = trainer_step  # sampled with the latest published weights
        else:
            trainer_step += 1
            lags.append(check_policy_lag(trainer_step, versions[trainer_step], max_async_level))
        assert produced - trainer_step <= max_async_level + 1
    assert max(lags) <= max_async_level
    assert min(lags) == 0 or max_async_level > 0


def test_bad_arguments_and_impossible_versions_are_refused() -> None:
    with pytest.raises(SyncError, match="step"):
        can_produce(0, 0, 1)
    with pytest.raises(SyncError, match="max_async_level"):
        can_produce(1, 0, -1)
    with pytest.raises(SyncError, match="policy_version"):
        check_policy_lag(3, 3, 2)  # weights of step 3 cannot have sampled the batch step 3 trains on
