"""`foveal sft`: supervised fine-tuning of a (vision-)language model on chat conversations.

    uv run foveal sft --config examples/sft_tiny_shapes.toml
    torchrun --nproc-per-node 8 -m foveal.configs sft --config run.toml     # one process per GPU

`run_sft` is the whole algorithm, top to bottom: build the model, renderer and data; then for each step take
the next packed batch, run forward and loss on each of this rank's micro-batches, backward, clip, step,
log, and checkpoint when due. Everything else (data, loss, optimizer, checkpoints, metrics, sharding)
lives in its own module.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from foveal.configs import Command, SFTConfig, add_config_arguments, config_from_args
from foveal.trainer.training.checkpoint import Checkpointer, DataPosition, TrainingState
from foveal.trainer.training.distributed import close_distributed, init_distributed, set_gradient_sync, shard_model
from foveal.trainer.training.loss import local_loss_tokens, sft_loss
from foveal.trainer.training.metrics import METRICS_FILE, MetricsLogger, StepMetrics, reduce_step
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import load_model, load_processor, resolve_precision, resolve_source
from foveal.trainer.training.optim import build_optimizer, build_scheduler, clip_gradients
from foveal.trainer.training.plots import PLOT_FILE, plot_training
from foveal.trainer.training.progress import TrainingProgress
from foveal.trainer.training.seeding import seed_everything
from foveal.trainer.data.steps import count_steps
from foveal.trainer.sft.data import build_sft_data


@dataclass(frozen=True)
class SFTResult:
    """How a `run_sft` call went: the steps it ran and the loss at its first and last step."""

    run_dir: Path
    rank: int
    first_step: int
    last_step: int
    initial_loss: float | None
    final_loss: float | None
    seconds: float
    checkpoint: Path | None
    metrics_path: Path


def run_sft(config: SFTConfig) -> SFTResult:
    """Train `config.model` on `config.sft.dataset`; resumes from the latest checkpoint when asked to."""
    started = time.perf_counter()
    refuse_unsupported(config)
    context = init_distributed(config.trainer.device)
    run_dir = config.logging.run_dir
    seed_everything(config.trainer.seed, context.rank)
    checkpointer = Checkpointer(
        config.trainer.checkpoint.dir or run_dir / "checkpoints", config.trainer.checkpoint, context
    )
    resume_from = checkpointer.resume_point()

    # Model (from the checkpoint when resuming), renderer and data.
    source = str(resume_from) if resume_from is not None else resolve_source(config.model.name_or_path)
    model = shard_model(load_model(config.model, source, context.device), context)
    processor = load_processor(config.model, source)
    precision = resolve_precision(config.trainer.precision, context.device)
    data = build_sft_data(config, source, processor, model, context)
    total_steps = count_steps(len(data.source), config.sft.batch_size, config.sft.epochs, config.sft.max_steps)

    optimizer = build_optimizer(model, config.trainer.optim)
    scheduler = build_scheduler(optimizer, config.trainer.schedule, total_steps)
    fresh = TrainingState(data=DataPosition(shuffle_seed=config.sft.shuffle_seed), world_size=context.world_size)
    state = checkpointer.restore(resume_from, model, optimizer, scheduler, fresh)
    logger = MetricsLogger(run_dir, config.logging, context.is_main, config.model_dump(mode="json"), state.step)

    history: list[StepMetrics] = []
    checkpoint = resume_from
    clock = time.perf_counter()
    with TrainingProgress(total_steps, state.step, context.is_main) as progress, data:
        for step, batch in enumerate(data.steps(state.data, total_steps - state.step), start=state.step + 1):
            step_started = time.perf_counter()
            loss_tokens = int(context.sum([local_loss_tokens(batch.micro_batches)])[0])
            optimizer.zero_grad(set_to_none=True)
            rank_loss = 0.0
            for index, micro_batch in enumerate(batch.micro_batches):
                micro_batch = micro_batch.to(context.device)
                set_gradient_sync(model, index == len(batch.micro_batches) - 1)
                with precision.autocast():
                    logits = packed_logits(model, micro_batch)
                loss = sft_loss(logits, micro_batch, loss_tokens)
                loss.backward()
                rank_loss += loss.item()
            grad_norm = clip_gradients(model.parameters(), config.trainer.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()

            rank_step = batch.rank_step(rank_loss, time.perf_counter() - clock, waited=step_started - clock)
            metrics = reduce_step(
                context,
                rank_step,
                step=step,
                epoch=batch.position.epoch,
                lr=lr,
                grad_norm=grad_norm,
                loss_tokens=loss_tokens,
                micro_batch_tokens=config.trainer.micro_batch_tokens,
            )
            history.append(metrics)
            logger.log(metrics, total_steps)
            progress.advance(metrics)
            if checkpointer.due(step, total_steps):
                state = TrainingState(step=step, data=batch.position, world_size=context.world_size)
                checkpoint = checkpointer.save(model, processor, optimizer, scheduler, state)
                write_plot(config, context.is_main)
            clock = time.perf_counter()  # the next step's wait for data starts after logging and checkpointing

    logger.close()
    close_distributed(context)
    return SFTResult(
        run_dir=run_dir,
        rank=context.rank,
        first_step=history[0].step if history else state.step,
        last_step=history[-1].step if history else state.step,
        initial_loss=history[0].loss if history else None,
        final_loss=history[-1].loss if history else None,
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        metrics_path=logger.path,
    )


class UnsupportedSetting(ValueError):
    """A valid setting this trainer does not act on yet; refused rather than silently ignored."""


def refuse_unsupported(config: SFTConfig) -> None:
    """`sft.eval_every` needs an eval set, which `[sft]` cannot name yet: refuse it instead of ignoring it."""
    if config.sft.eval_every:
        raise UnsupportedSetting(
            f"sft.eval_every: 0 (evaluation during SFT is not implemented yet) (got {config.sft.eval_every})"
        )


def write_plot(config: SFTConfig, is_main: bool) -> Path | None:
    """The loss plot of the run so far, when `logging.plots` is on (rank 0 only)."""
    if not (config.logging.plots and is_main):
        return None
    return plot_training(config.logging.run_dir / METRICS_FILE, config.logging.run_dir / PLOT_FILE)


def _run(args: argparse.Namespace) -> int:
    result = run_sft(config_from_args(args, SFTConfig))
    if result.rank != 0:
        return 0
    if result.initial_loss is not None:
        print(
            f"sft: steps {result.first_step}-{result.last_step}  loss {result.initial_loss:.4f} -> "
            f"{result.final_loss:.4f}  {result.seconds:.1f} s  run {result.run_dir}"
        )
    print(f"sft: checkpoint {result.checkpoint}" if result.checkpoint else "sft: no checkpoint written")
    return 0


command = Command(
    name="sft",
    help="supervised fine-tuning on chat data (JSONL, HF datasets, or the generated shapes demo)",
    configure=add_config_arguments,
    run=_run,
)
