"""`foveal sft`: supervised fine-tuning of a (vision-)language model on chat conversations.

    uv run foveal sft --config examples/sft_tiny_shapes.toml
    torchrun --nproc-per-node 8 -m foveal.configs sft --config run.toml     # one process per GPU

`run_sft` is the whole algorithm, top to bottom: build the model, renderer and data; then for each step take
the next packed batch, run forward and loss on each of this rank's micro-batches, backward, clip, step,
log, and checkpoint when due. Everything else lives in its own module: the run's skeleton (optimizer, resume,
metrics, checkpoints, plots) in `foveal.trainer.training.run`, data, loss and sharding beside it.
"""

from __future__ import annotations

import argparse

from foveal.configs import SFTConfig, config_from_args
from foveal.trainer.data.steps import StepBatch, count_steps
from foveal.trainer.runs.layout import SFT_PLOT_FILE
from foveal.trainer.sft.data import build_sft_data
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.training.chunked_ce import packed_sft_loss
from foveal.trainer.training.loss import local_loss_tokens
from foveal.trainer.training.metrics import StepMetrics
from foveal.trainer.training.run import RunResult, StepClock, TrainingRun
from foveal.trainer.training.start import start_run


class SFTResult(RunResult):
    """How a `run_sft` call went: the steps it ran and the loss at its first and last step."""


def run_sft(config: SFTConfig) -> SFTResult:
    """Train `config.model` on `config.sft.dataset`; resumes from the latest checkpoint when asked to."""
    refuse_unsupported(config)
    start = start_run(config)
    source, model, processor = start.load_policy(config.model)
    data = build_sft_data(config, source, processor, model, start.context)
    total_steps = count_steps(len(data.source), config.sft.batch_size, config.sft.epochs, config.sft.max_steps)
    fresh = DataPosition(shuffle_seed=config.sft.shuffle_seed)
    run = TrainingRun(start, model, processor, total_steps, name="sft", plot_file=SFT_PLOT_FILE, data=fresh)
    with run, data:
        for step, batch, clock in run.steps(data.steps(run.state.data, run.steps_left)):
            run.record(train_step(run, step, batch, clock))
            run.checkpoint_when_due(step, batch.position)
    return run.finish(SFTResult)


def train_step(run: TrainingRun, step: int, batch: StepBatch, clock: StepClock) -> StepMetrics:
    """Forward and loss on each of this rank's micro-batches, backward, optimizer step; the step's metrics."""
    loss_tokens = int(run.context.sum([local_loss_tokens(batch.micro_batches)])[0])
    chunk_tokens = run.start.config.trainer.loss_chunk_tokens
    rank_loss = 0.0
    for micro_batch in run.accumulate(batch.micro_batches):
        with run.precision.autocast():
            loss = packed_sft_loss(run.model, micro_batch, loss_tokens, chunk_tokens)
        loss.backward()
        rank_loss += loss.item()
    update = run.optimizer_step()
    rank_step = batch.rank_step(rank_loss, clock.elapsed(), waited=clock.waited)
    return run.step_metrics(step, rank_step, update, epoch=batch.position.epoch, loss_tokens=loss_tokens)


class UnsupportedSetting(ValueError):
    """A valid setting this trainer does not act on yet; refused rather than silently ignored."""


def refuse_unsupported(config: SFTConfig) -> None:
    """`sft.eval_every` needs an eval set, which `[sft]` cannot name yet: refuse it instead of ignoring it."""
    if config.sft.eval_every:
        raise UnsupportedSetting(
            f"sft.eval_every: 0 (evaluation during SFT is not implemented yet) (got {config.sft.eval_every})"
        )


def main(args: argparse.Namespace) -> int:
    """`foveal sft` (declared in foveal.trainer.commands): train; rank 0 prints the losses and checkpoint."""
    result = run_sft(config_from_args(args, SFTConfig))
    if result.rank == 0:
        result.print_summary("sft")
    return 0
