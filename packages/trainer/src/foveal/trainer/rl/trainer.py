"""`foveal rl-trainer`: the trainer process of an RL run, fed rollout batches through the run folder.

    uv run foveal rl-trainer --config run.toml       # next to the orchestrator and the inference servers
    torchrun --nproc-per-node 8 -m foveal.configs rl-trainer --config run.toml

`run_rl_trainer` is the algorithm, top to bottom: bind the run folder to this config (`run_meta.json`),
build the model and the packer; then for each step wait for the step's rollout batch, check its policy lag
against `orchestrator.max_async_level`, materialize and pack it, run forward and the RL loss on each of this
rank's micro-batches, backward, clip, step, write the step's checkpoint (the policy the orchestrator pushes
to the servers next) and `trainer_state.json`, and log.

Resuming (`trainer.checkpoint.resume = true`) loads the model, optimizer, schedule and RNG from the latest
checkpoint and continues with the next step's batch. Every step is checkpointed and published atomically
before `trainer_state.json` names it, so a trainer killed at any point neither loses nor repeats a step:
it retrains at most the step it was in, from the same weights and the same published batch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from foveal.configs import Command, RLConfig, add_config_arguments, config_from_args
from foveal.trainer.training.checkpoint import Checkpointer, TrainingState
from foveal.trainer.training.distributed import DistributedContext, close_distributed, init_distributed, set_gradient_sync
from foveal.trainer.training.distributed import shard_model
from foveal.trainer.training.loss import local_loss_tokens
from foveal.trainer.training.metrics import METRICS_FILE, MetricsLogger, reduce_step
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import load_model, load_processor, resolve_precision, resolve_source
from foveal.trainer.training.optim import build_optimizer, build_scheduler, clip_gradients
from foveal.trainer.training.plots import RL_PLOT_FILE, plot_metrics
from foveal.trainer.training.progress import TrainingProgress
from foveal.trainer.runs.rollouts import wait_for_batch
from foveal.trainer.rl.packer import build_rl_packer
from foveal.trainer.rl.loss import PolicyStats, rl_loss
from foveal.trainer.rl.metrics import RL_PLOT_KEYS, RLStepMetrics, StepTimings, reduce_rl_step
from foveal.trainer.rl.sync import TrainerProgress, check_policy_lag, write_progress
from foveal.trainer.runs.meta import RL_BOUND_KEYS, ensure_run_meta
from foveal.trainer.training.seeding import seed_everything


@dataclass(frozen=True)
class RLTrainerResult:
    """How a `run_rl_trainer` call went: the steps it trained, their metrics, and the last checkpoint."""

    run_dir: Path
    rank: int
    first_step: int
    last_step: int
    history: tuple[RLStepMetrics, ...]
    seconds: float
    checkpoint: Path | None
    metrics_path: Path


def run_rl_trainer(config: RLConfig) -> RLTrainerResult:
    """Train on the run folder's rollout batches up to `rl.max_steps`; resumes from the latest checkpoint when asked."""
    started = time.perf_counter()
    run_dir, trainer = config.logging.run_dir, config.trainer
    context = init_distributed(trainer.device)
    if context.is_main:
        ensure_run_meta(run_dir, config, "rl", RL_BOUND_KEYS)
    context.barrier()
    seed_everything(trainer.seed, context.rank)
    checkpointer = Checkpointer(trainer.checkpoint.dir or run_dir / "checkpoints", trainer.checkpoint, context)
    resume_from = checkpointer.resume_point()

    # Model (from the checkpoint when resuming), processor and the packer of rollout batches.
    source = str(resume_from) if resume_from is not None else resolve_source(config.model.name_or_path)
    model = shard_model(load_model(config.model, source, context.device), context)
    processor = load_processor(config.model, source)
    precision = resolve_precision(trainer.precision, context.device)
    packer = build_rl_packer(config, source, processor, model, context)
    total_steps = config.rl.max_steps

    optimizer = build_optimizer(model, trainer.optim)
    scheduler = build_scheduler(optimizer, trainer.schedule, total_steps)
    state = checkpointer.restore(resume_from, model, optimizer, scheduler, TrainingState(world_size=context.world_size))
    logger = MetricsLogger(run_dir, config.logging, context.is_main, config.model_dump(mode="json"), state.step)
    publish_progress(run_dir, state.step, resume_from, context)

    history: list[RLStepMetrics] = []
    checkpoint = resume_from
    with TrainingProgress(total_steps, state.step, context.is_main, description="rl") as progress, packer:
        for step in range(state.step + 1, total_steps + 1):
            clock = time.perf_counter()
            rollouts = wait_for_batch(run_dir, step, trainer.rollout_timeout_s)
            lag = check_policy_lag(step, rollouts.policy_version, config.orchestrator.max_async_level)
            received = time.perf_counter()
            batch = packer.pack(rollouts)
            packed = time.perf_counter()

            loss_tokens = int(context.sum([local_loss_tokens(batch.micro_batches)])[0])
            optimizer.zero_grad(set_to_none=True)
            rank_loss, stats = 0.0, PolicyStats()
            for index, micro_batch in enumerate(batch.micro_batches):
                micro_batch = micro_batch.to(context.device)
                set_gradient_sync(model, index == len(batch.micro_batches) - 1)
                with precision.autocast():
                    logits = packed_logits(model, micro_batch)
                result = rl_loss(logits, micro_batch, loss_tokens, trainer.loss)
                result.loss.backward()
                rank_loss += result.loss.item()
                stats += result.stats
            grad_norm = clip_gradients(model.parameters(), trainer.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            trained = time.perf_counter()

            # Every step: the checkpoint is the next policy (RLConfig refuses checkpoint.every_steps != 1).
            state = TrainingState(step=step, world_size=context.world_size)
            checkpoint = checkpointer.save(model, processor, optimizer, scheduler, state)
            publish_progress(run_dir, step, checkpoint, context)
            done = time.perf_counter()

            rank_step = batch.rank_step(rank_loss, done - clock, waited=packed - clock)
            base = reduce_step(context, rank_step, step=step, epoch=0, lr=lr, grad_norm=grad_norm,
                               loss_tokens=loss_tokens, micro_batch_tokens=trainer.micro_batch_tokens)  # fmt: skip
            timings = StepTimings(wait=received - clock, materialize=packed - received, train=trained - packed,
                                  checkpoint=done - trained)  # fmt: skip
            metrics = reduce_rl_step(context, base, stats, timings, policy_lag=lag, rollout=rollouts.metrics)
            history.append(metrics)
            logger.log(metrics, total_steps)
            progress.advance(metrics)
            write_plot(config, context.is_main)

    logger.close()
    close_distributed(context)
    return RLTrainerResult(
        run_dir=run_dir,
        rank=context.rank,
        first_step=history[0].step if history else state.step,
        last_step=history[-1].step if history else state.step,
        history=tuple(history),
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        metrics_path=logger.path,
    )


def publish_progress(run_dir: Path, step: int, checkpoint: Path | None, context: DistributedContext) -> None:
    """Tell the orchestrator (rank 0 writes) which step is done and where its weights are."""
    if context.is_main:
        write_progress(run_dir, TrainerProgress(step=step, checkpoint=None if checkpoint is None else str(checkpoint)))


def write_plot(config: RLConfig, is_main: bool) -> Path | None:
    """The RL curves of the run so far, when `logging.plots` is on (rank 0 only)."""
    if not (config.logging.plots and is_main):
        return None
    return plot_metrics(config.logging.run_dir / METRICS_FILE, config.logging.run_dir / RL_PLOT_FILE, RL_PLOT_KEYS)


def _run(args: argparse.Namespace) -> int:
    result = run_rl_trainer(config_from_args(args, RLConfig))
    if result.rank != 0:
        return 0
    if result.history:
        first, last = result.history[0], result.history[-1]
        print(
            f"rl-trainer: steps {result.first_step}-{result.last_step}  loss {first.loss:.4f} -> {last.loss:.4f}  "
            f"mismatch kl {last.mismatch_kl:.2e}  {result.seconds:.1f} s  run {result.run_dir}"
        )
    print(f"rl-trainer: checkpoint {result.checkpoint}" if result.checkpoint else "rl-trainer: no checkpoint written")
    return 0


command = Command(
    name="rl-trainer",
    help="the trainer process of an RL run: trains on rollout batches the orchestrator publishes in the run folder",
    configure=add_config_arguments,
    run=_run,
)
