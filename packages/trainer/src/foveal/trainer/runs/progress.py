"""The trainer's progress in the run folder: its latest finished step and that step's checkpoint.

Rank 0 of the trainer writes `<run dir>/trainer_state.json` atomically after the step's checkpoint is
complete; the orchestrator reads it to push the newest weights and to pace itself on the async bound
(`foveal.trainer.rl.sync`), and the launcher's display reads it to show progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foveal.renderers.atomic_files import write_atomic
from foveal.trainer.runs.layout import TRAINER_PROGRESS_FILE

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
    return write_atomic(run_dir / TRAINER_PROGRESS_FILE, progress.model_dump_json(indent=1).encode())


def read_progress(run_dir: Path) -> TrainerProgress | None:
    """The trainer's published progress; None before the trainer first wrote it."""
    path = run_dir / TRAINER_PROGRESS_FILE
    try:
        return TrainerProgress.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as error:
        raise SyncError(str(path), error.errors()[0]["msg"], "a valid trainer_state.json") from None
