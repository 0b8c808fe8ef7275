"""The start of every training run (SFT, RL trainer, DFlash), before its model exists.

Joining the process group, seeding, finding the checkpoint to resume from and choosing the precision come
first because the job's model is built from them: a resumed run loads its weights from that checkpoint.
`foveal.trainer.training.run.TrainingRun` takes over once the job has built its model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from foveal.configs.logging import LoggingConfig
from foveal.configs.model import ModelConfig
from foveal.configs.trainer import TrainerConfig
from foveal.trainer.model.loading import (
    Precision,
    load_model,
    load_processor,
    missing_model_file,
    resolve_precision,
    resolve_source,
)
from foveal.trainer.runs.layout import checkpoints_dir
from foveal.trainer.training.checkpoint import CheckpointError, Checkpointer
from foveal.trainer.training.distributed import DistributedContext, init_distributed, shard_model
from foveal.trainer.training.freeze import freeze_vision
from foveal.trainer.training.seeding import seed_everything


class JobConfig(Protocol):
    """What the skeleton reads of a job's config (`SFTConfig`, `RLConfig`, `DFlashConfig`)."""

    @property
    def trainer(self) -> TrainerConfig: ...

    @property
    def logging(self) -> LoggingConfig: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunStart:
    """This process's place in the run, seeded, with the checkpoint it resumes from (None: a fresh run)."""

    config: JobConfig
    context: DistributedContext
    checkpointer: Checkpointer
    resume_from: Path | None
    precision: Precision
    started: float
    """`time.perf_counter()` when the run started: the run's `seconds` count from here."""

    @property
    def run_dir(self) -> Path:
        return self.config.logging.run_dir

    def load_policy(self, model: ModelConfig) -> tuple[str, torch.nn.Module, Any]:
        """(source, sharded model, processor) to train: the resumed checkpoint's, else those of `[model]`.

        With `trainer.freeze_vision` the vision side is frozen before sharding, so the optimizer never holds it."""
        source = checkpoint_source(self.resume_from) if self.resume_from else resolve_source(model.name_or_path)
        loaded = load_model(model, source, self.context.device)
        if self.config.trainer.freeze_vision:
            freeze_vision(loaded)
        return source, shard_model(loaded, self.context), load_processor(model, source)


def checkpoint_source(checkpoint: Path) -> str:
    """The checkpoint's folder as the model's source; one that lost its config or weights is refused by name."""
    missing = missing_model_file(checkpoint)
    if missing:
        expected = f"a complete checkpoint, with {missing}; delete this one to resume from the one before it"
        raise CheckpointError("checkpoint folder", str(checkpoint), expected)
    return str(checkpoint)


def start_run(config: JobConfig, context: DistributedContext | None = None) -> RunStart:
    """Join the run (or take the `context` a job already joined), seed, and find the checkpoint to resume from."""
    started = time.perf_counter()
    trainer = config.trainer
    context = context if context is not None else init_distributed(trainer.device)
    seed_everything(trainer.seed, context.rank)
    folder = checkpoints_dir(config.logging.run_dir, trainer.checkpoint.dir)
    checkpointer = Checkpointer(folder, trainer.checkpoint, context)
    precision = resolve_precision(trainer.precision, context.device)
    return RunStart(config, context, checkpointer, checkpointer.resume_point(), precision, started)
