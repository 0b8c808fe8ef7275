"""How far the trainer is, and how far the orchestrator may run ahead of it (`orchestrator.max_async_level`).

Versions. Step s (1-based) trains on the batch of step s. The weights after step s are policy version s;
version 0 is the initial model. The trainer publishes its latest finished step and that step's checkpoint
in `<run dir>/trainer_state.json` (atomic), which the orchestrator reads to push new weights and to pace itself.

The bound. A batch sampled with version v and trained at step s lags the policy by s - 1 - v steps
(0 = on-policy: step s trains on rollouts of the weights step s - 1 produced). With k = max_async_level the
lag may be at most k, so the orchestrator may produce the batch of step s only once version s - 1 - k exists:

    can_produce(s, v, k)  <=>  v >= s - 1 - k

k = 0 is synchronous RL: batch s waits for step s - 1. k = 1 samples batch s while the trainer trains
step s - 1. The trainer re-checks the version each batch records (`check_policy_lag`), so a batch that
breaks the bound is refused, not silently trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foveal.renderers.atomic_files import write_atomic

TRAINER_STATE_FILE = "trainer_state.json"


class SyncError(ValueError):
    """A step, version or lag outside what the async bound allows; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


class TrainerProgress(BaseModel):
    """`<run dir>/trainer_state.json`: the trainer's latest finished step and where its weights are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    step: int = Field(default=0, ge=0, description="Optimizer steps finished: the policy version of `checkpoint`.")
    checkpoint: str | None = Field(
        default=None, description="That step's checkpoint folder; None at step 0 (the initial model)."
    )


def write_progress(run_dir: Path, progress: TrainerProgress) -> Path:
    """Publish the trainer's progress atomically (rank 0, after the step's checkpoint is complete)."""
    return write_atomic(run_dir / TRAINER_STATE_FILE, progress.model_dump_json(indent=1).encode())


def read_progress(run_dir: Path) -> TrainerProgress | None:
    """The trainer's published progress; None before the trainer first wrote it."""
    path = run_dir / TRAINER_STATE_FILE
    try:
        return TrainerProgress.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as error:
        raise SyncError(str(path), error.errors()[0]["msg"], "a valid trainer_state.json") from None


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
