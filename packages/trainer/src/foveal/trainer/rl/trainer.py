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

from foveal.configs import RLConfig, config_from_args
from foveal.trainer.rl.loss import PolicyStats, rl_nll_loss
from foveal.trainer.rl.metrics import RL_PLOT_KEYS, RLStepMetrics, StepTimings, reduce_rl_step
from foveal.trainer.rl.packer import RLPacker, build_rl_packer
from foveal.trainer.rl.sync import check_policy_lag
from foveal.trainer.runs.layout import RL_PLOT_FILE
from foveal.trainer.runs.meta import RL_BOUND_KEYS, ensure_run_meta
from foveal.trainer.runs.progress import TrainerProgress, write_progress
from foveal.trainer.runs.rollouts import RLBatch, wait_for_batch
from foveal.trainer.training.distributed import DistributedContext, init_distributed
from foveal.trainer.training.chunked_ce import packed_token_scores
from foveal.trainer.training.loss import local_loss_tokens
from foveal.trainer.training.run import RunResult, StepClock, TrainingRun
from foveal.trainer.training.start import start_run


@dataclass(frozen=True)
class RLTrainerResult(RunResult):
    """How a `run_rl_trainer` call went: the steps it trained, their metrics, and the last checkpoint."""

    history: tuple[RLStepMetrics, ...]


def run_rl_trainer(config: RLConfig) -> RLTrainerResult:
    """Train on the run folder's rollout batches up to `rl.max_steps`; resumes from the latest checkpoint when asked."""
    run_dir, trainer = config.logging.run_dir, config.trainer
    context = init_distributed(trainer.device)
    if context.is_main:
        ensure_run_meta(run_dir, config, "rl", RL_BOUND_KEYS)
    context.barrier()
    start = start_run(config, context)

    # Model (from the checkpoint when resuming), processor and the packer of rollout batches.
    source, model, processor = start.load_policy(config.model)
    packer = build_rl_packer(config, source, processor, model, context)
    run = TrainingRun(
        start, model, processor, config.rl.max_steps, name="rl", plot_file=RL_PLOT_FILE, plot_keys=RL_PLOT_KEYS
    )
    publish_progress(run_dir, run.state.step, start.resume_from, context)
    remaining = range(run.state.step + 1, run.total_steps + 1)
    with run, packer:
        batches = (wait_for_batch(run_dir, step, trainer.rollout_timeout_s) for step in remaining)
        for step, rollouts, clock in run.steps(batches):
            run.record(train_step(run, config, packer, step, rollouts, clock))
            # Published only once its metrics are logged: a stop right after the orchestrator sees the step
            # (the launcher stops everyone when one child dies) can no longer lose the step's metrics row.
            publish_progress(run_dir, step, run.last_checkpoint, context)
            run.plot()
    return run.finish(RLTrainerResult, history=tuple(run.history))


def train_step(
    run: TrainingRun, config: RLConfig, packer: RLPacker, step: int, rollouts: RLBatch, clock: StepClock
) -> RLStepMetrics:
    """Check the batch's policy lag, pack it, then forward and RL loss per micro-batch, backward, optimizer step,
    and checkpoint the new policy (published by the caller); the step's metrics with where its time went."""
    lag = check_policy_lag(step, rollouts.policy_version, config.orchestrator.max_async_level)
    batch = packer.pack(rollouts)
    packed = time.perf_counter()

    loss_tokens = int(run.context.sum([local_loss_tokens(batch.micro_batches)])[0])
    rank_loss, stats = 0.0, PolicyStats()
    bonus = config.trainer.loss.entropy_coef > 0  # the entropy keeps its graph only when the loss uses it
    for micro_batch in run.accumulate(batch.micro_batches):
        with run.precision.autocast():
            scores = packed_token_scores(run.model, micro_batch, config.trainer.loss_chunk_tokens, bonus)
        result = rl_nll_loss(scores.nll, micro_batch, loss_tokens, config.trainer.loss, entropy=scores.entropy)
        result.loss.backward()
        rank_loss += result.loss.item()
        stats += result.stats
    update = run.optimizer_step()
    trained = time.perf_counter()

    # Every step: the checkpoint is the next policy (RLConfig refuses checkpoint.every_steps != 1).
    run.checkpoint(step)
    done = time.perf_counter()

    rank_step = batch.rank_step(rank_loss, done - clock.started, waited=packed - clock.started)
    base = run.step_metrics(step, rank_step, update, epoch=0, loss_tokens=loss_tokens)
    timings = StepTimings(wait=clock.waited, materialize=packed - clock.arrived, train=trained - packed,
                          checkpoint=done - trained)  # fmt: skip
    return reduce_rl_step(run.context, base, stats, timings, policy_lag=lag, rollout=rollouts.metrics)


def publish_progress(run_dir: Path, step: int, checkpoint: Path | None, context: DistributedContext) -> None:
    """Tell the orchestrator (rank 0 writes) which step is done and where its weights are."""
    if context.is_main:
        write_progress(run_dir, TrainerProgress(step=step, checkpoint=None if checkpoint is None else str(checkpoint)))


def main(args: argparse.Namespace) -> int:
    """`foveal rl-trainer` (declared in foveal.trainer.commands): train; rank 0 prints the summary."""
    result = run_rl_trainer(config_from_args(args, RLConfig))
    if result.rank == 0:
        note = f"mismatch kl {result.history[-1].mismatch_kl:.2e}  " if result.history else ""
        result.print_summary("rl-trainer", note=note)
    return 0
