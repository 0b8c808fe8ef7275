"""How far the trainer is, and how far the orchestrator may run ahead of it (`orchestrator.max_async_level`).

Versions. Step s (1-based) trains on the batch of step s. The weights after step s are policy version s;
version 0 is the initial model. The trainer publishes its latest finished step and that step's checkpoint
in `<run dir>/trainer_state.json` (atomic, `foveal.trainer.runs.progress`), which the orchestrator reads
to push new weights and to pace itself.

The bound. A batch sampled with version v and trained at step s lags the policy by s - 1 - v steps
(0 = on-policy: step s trains on rollouts of the weights step s - 1 produced). With k = max_async_level the
lag may be at most k, so the orchestrator may produce the batch of step s only once version s - 1 - k exists:

    can_produce(s, v, k)  <=>  v >= s - 1 - k

k = 0 is synchronous RL: batch s waits for step s - 1. k = 1 samples batch s while the trainer trains
step s - 1. The trainer re-checks the version each batch records (`check_policy_lag`), so a batch that
breaks the bound is refused, not silently trained on.
"""

from __future__ import annotations

from foveal.trainer.runs.progress import SyncError


def can_produce(step: int, trainer_step: int, max_async_level: int) -> bool:
    """Whether the batch of `step` may be sampled now, with the weights of `trainer_step` (see the module doc).

    Pass the version the servers hold when it trails the trainer: the bound is on the weights that sample.
    """
    _check(step=step, trainer_step=trainer_step, max_async_level=max_async_level)
    return trainer_step >= step - 1 - max_async_level


def policy_lag(step: int, policy_version: int) -> int:
    """Steps between the weights that sampled a batch and the weights that train on it (0 = on-policy)."""
    return step - 1 - policy_version


def check_policy_lag(step: int, policy_version: int, max_async_level: int) -> int:
    """The lag of the batch of `step`; a batch beyond `max_async_level` is refused. Returns the lag."""
    lag = policy_lag(step, policy_version)
    if not 0 <= lag <= max_async_level:
        raise SyncError(
            f"rollout batch {step}.policy_version",
            policy_version,
            f"between {step - 1 - max_async_level} and {step - 1} (orchestrator.max_async_level = {max_async_level})",
        )
    return lag


def _check(**values: int) -> None:
    minimum = {"step": 1, "trainer_step": 0, "max_async_level": 0}
    for name, value in values.items():
        if value < minimum[name]:
            raise SyncError(name, value, f"at least {minimum[name]}")
