"""The training-run skeleton SFT, the RL trainer and DFlash share: what every step does besides the job's math.

A job builds its model from a `RunStart` (`foveal.trainer.training.start`), wraps it in a `TrainingRun`, and
writes only its own loop and step:

    run = TrainingRun(start, model, processor, total_steps, name="sft", plot_file=SFT_PLOT_FILE)
    with run, data:
        for step, batch, clock in run.steps(data.steps(run.state.data, run.steps_left)):
            run.record(train_step(run, step, batch, clock))
            run.checkpoint_when_due(step, batch.position)
    return run.finish(SFTResult)

where `train_step` runs forward, the job's loss and backward on each micro-batch of `run.accumulate(...)`,
then `run.optimizer_step()` and `run.step_metrics(...)`. The run owns the optimizer, schedule, restored
state, metrics log, progress bar, history and last checkpoint; the job keeps the order of train, log and
checkpoint (RL checkpoints inside its timed step, and plots every step).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import torch

from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.training.checkpoint import DataPosition, TrainingState
from foveal.trainer.training.distributed import close_distributed, set_gradient_sync
from foveal.trainer.training.metrics import MetricsLogger, RankStep, StepMetrics, reduce_step
from foveal.trainer.training.optim import build_optimizer, build_scheduler, clip_gradients
from foveal.trainer.training.plots import plot_metrics, plot_training
from foveal.trainer.training.progress import TrainingProgress
from foveal.trainer.training.start import RunStart

B = TypeVar("B")
R = TypeVar("R", bound="RunResult")


@dataclass(frozen=True)
class RunResult:
    """How a run went on this rank: the steps it ran, the loss at its first and last, its last checkpoint."""

    run_dir: Path
    rank: int
    first_step: int
    last_step: int
    initial_loss: float | None
    final_loss: float | None
    seconds: float
    checkpoint: Path | None
    metrics_path: Path

    def print_summary(self, command: str, *, note: str = "", details: Sequence[str] = ()) -> None:
        """The lines rank 0 prints at the end: steps and loss (when a step ran; `note` joins that line), the
        job's `details`, then the checkpoint."""
        if self.initial_loss is not None:
            print(
                f"{command}: steps {self.first_step}-{self.last_step}  loss {self.initial_loss:.4f} -> "
                f"{self.final_loss:.4f}  {note}{self.seconds:.1f} s  run {self.run_dir}"
            )
        for line in details:
            print(f"{command}: {line}")
        print(f"{command}: checkpoint {self.checkpoint}" if self.checkpoint else f"{command}: no checkpoint written")


@dataclass(frozen=True)
class StepClock:
    """When a step began (the previous step was done) and when its batch arrived: the wait for data between."""

    started: float
    arrived: float

    @property
    def waited(self) -> float:
        return self.arrived - self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class OptimizerUpdate:
    """What an optimizer step reports: the gradient norm before clipping and the lr it stepped at."""

    grad_norm: float
    lr: float


class TrainingRun:
    """A model under training: its optimizer and schedule, the state it starts from (`state`: the resumed
    checkpoint's step and data position, or step 0), metrics log, progress bar, the metrics of its steps so
    far (`history`) and its last checkpoint. A context manager that shows the progress bar."""

    def __init__(
        self,
        start: RunStart,
        model: torch.nn.Module,
        processor: Any,
        total_steps: int,
        *,
        name: str,
        plot_file: str,
        plot_keys: Sequence[str] | None = None,
        data: DataPosition = DataPosition(),
    ) -> None:
        """`name` labels the progress bar; `plot_keys` are the metrics drawn in panels (None: the loss and lr
        curves); `data` is where a fresh run's data starts."""
        config, context = start.config, start.context
        self.start, self.context, self.precision = start, context, start.precision
        self.model, self.processor, self.total_steps = model, processor, total_steps
        self.plot_file, self.plot_keys = plot_file, plot_keys
        self.optimizer = build_optimizer(model, config.trainer.optim)
        self.scheduler = build_scheduler(self.optimizer, config.trainer.schedule, total_steps)
        fresh = TrainingState(data=data, world_size=context.world_size)
        self.state = start.checkpointer.restore(start.resume_from, model, self.optimizer, self.scheduler, fresh)
        self.logger = MetricsLogger(
            start.run_dir, config.logging, context.is_main, config.model_dump(mode="json"), self.state.step
        )
        self.progress = TrainingProgress(total_steps, self.state.step, context.is_main, name)
        self.history: list[StepMetrics] = []
        self.last_checkpoint = start.resume_from

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    @property
    def steps_left(self) -> int:
        return self.total_steps - self.state.step

    def steps(self, batches: Iterable[B]) -> Iterator[tuple[int, B, StepClock]]:
        """Each batch numbered from the step after `state.step`, with its step's clock.

        A step's clock starts when the previous step is done (logged, checkpointed), so the wait for the
        next batch is the step's data wait.
        """
        started = time.perf_counter()
        for step, batch in enumerate(batches, start=self.state.step + 1):
            yield step, batch, StepClock(started, time.perf_counter())
            started = time.perf_counter()

    def accumulate(self, micro_batches: Sequence[PackedBatch]) -> Iterator[PackedBatch]:
        """This rank's micro-batches on its device, for the job's forward, loss and backward on each.

        Gradients are zeroed before the first and reduced across ranks only in the last one's backward.
        """
        self.optimizer.zero_grad(set_to_none=True)
        for index, micro_batch in enumerate(micro_batches):
            set_gradient_sync(self.model, index == len(micro_batches) - 1)
            yield micro_batch.to(self.context.device)

    def optimizer_step(self) -> OptimizerUpdate:
        """Clip the accumulated gradients, step at the schedule's current lr, then advance the schedule."""
        grad_norm = clip_gradients(self.model.parameters(), self.start.config.trainer.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return OptimizerUpdate(grad_norm, lr)

    def step_metrics(
        self, step: int, rank_step: RankStep, update: OptimizerUpdate, *, epoch: int, loss_tokens: int
    ) -> StepMetrics:
        """The step's metrics over all ranks (a collective: every rank calls it)."""
        return reduce_step(
            self.context,
            rank_step,
            step=step,
            epoch=epoch,
            lr=update.lr,
            grad_norm=update.grad_norm,
            loss_tokens=loss_tokens,
            micro_batch_tokens=self.start.config.trainer.micro_batch_tokens,
        )

    def record(self, metrics: StepMetrics) -> None:
        """Keep the step's metrics, log them (every `log_every` steps and the last) and advance the bar."""
        self.history.append(metrics)
        self.logger.log(metrics, self.total_steps)
        self.progress.advance(metrics)

    def checkpoint(self, step: int, data: DataPosition = DataPosition()) -> Path:
        """Save the model, optimizer, schedule, RNG and data position after `step` (a collective)."""
        state = TrainingState(step=step, data=data, world_size=self.context.world_size)
        self.last_checkpoint = self.start.checkpointer.save(
            self.model, self.processor, self.optimizer, self.scheduler, state
        )
        return self.last_checkpoint

    def checkpoint_when_due(self, step: int, data: DataPosition) -> None:
        """Checkpoint and redraw the plot every `checkpoint.every_steps` steps and after the last."""
        if self.start.checkpointer.due(step, self.total_steps):
            self.checkpoint(step, data)
            self.plot()

    def plot(self) -> Path | None:
        """The run's curves so far, drawn from metrics.jsonl (rank 0, when `logging.plots` is on)."""
        if not (self.start.config.logging.plots and self.context.is_main):
            return None
        out = self.start.run_dir / self.plot_file
        if self.plot_keys is None:
            return plot_training(self.logger.path, out)
        return plot_metrics(self.logger.path, out, self.plot_keys)

    def finish(self, result: type[R], **extra: Any) -> R:
        """Close the metrics sinks and leave the process group; the run's `result` with the job's `extra` fields."""
        self.logger.close()
        close_distributed(self.context)
        history = self.history
        return result(
            run_dir=self.start.run_dir,
            rank=self.context.rank,
            first_step=history[0].step if history else self.state.step,
            last_step=history[-1].step if history else self.state.step,
            initial_loss=history[0].loss if history else None,
            final_loss=history[-1].loss if history else None,
            seconds=time.perf_counter() - self.start.started,
            checkpoint=self.last_checkpoint,
            metrics_path=self.logger.path,
            **extra,
        )
