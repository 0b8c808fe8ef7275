"""Per-step metrics of the RL trainer: the SFT step metrics plus policy, lag, timing and rollout numbers.

One JSON line per step in `<run dir>/metrics.jsonl` (through `MetricsLogger`), with, beyond `StepMetrics`:
  policy_lag                  steps between the weights that sampled the batch and the ones trained (0 = on-policy)
  mismatch_kl, ratio_mean, clip_fraction   per counted token, over the step on all ranks (`foveal.trainer.rl.loss`)
  entropy                     the policy's next-token entropy (nats) per counted token, from the loss's own logits
  completion_tokens_mean      counted (loss) tokens per sample
  wait_seconds                waiting for the step's rollout batch to be published
  materialize_seconds         reading, materializing and packing it
  train_seconds               forward, backward, optimizer step
  checkpoint_seconds          writing the step's checkpoint and trainer_state.json (the trainer's share of weight sync)
  reward_mean, reward/<env>, rollouts, failed_rollouts, rollout_completion_tokens_mean,
  inference_seconds, scoring_seconds, weight_sync_seconds   as the orchestrator measured them (`RolloutMetrics`)
Times are the slowest rank's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.training.metrics import StepMetrics
from foveal.trainer.runs.rollouts import RolloutMetrics
from foveal.trainer.rl.loss import PolicyStats

RL_PLOT_KEYS = (
    "loss", "reward_mean", "mismatch_kl", "clip_fraction", "entropy", "completion_tokens_mean", "tokens_per_second"
)


@dataclass(frozen=True)
class StepTimings:
    """Where one rank's step went, in seconds."""

    wait: float
    materialize: float
    train: float
    checkpoint: float


@dataclass(frozen=True)
class RLStepMetrics(StepMetrics):
    """What one RL step did, over all ranks."""

    policy_lag: int
    mismatch_kl: float
    ratio_mean: float
    clip_fraction: float
    entropy: float
    completion_tokens_mean: float
    wait_seconds: float
    materialize_seconds: float
    train_seconds: float
    checkpoint_seconds: float
    rollout: RolloutMetrics

    def as_dict(self) -> dict[str, float | int]:
        """Flat numbers: the rollout metrics inline, the reward of each environment as `reward/<name>`."""
        row = {key: value for key, value in asdict(self).items() if key != "rollout"}
        rollout = self.rollout
        return row | {
            "reward_mean": rollout.reward_mean,
            **{f"reward/{name}": value for name, value in sorted(rollout.reward_by_environment.items())},
            "rollouts": rollout.rollouts,
            "failed_rollouts": rollout.failed,
            "rollout_completion_tokens_mean": rollout.completion_tokens_mean,
            "inference_seconds": rollout.inference_seconds,
            "scoring_seconds": rollout.scoring_seconds,
            "weight_sync_seconds": rollout.weight_sync_seconds,
        }


def reduce_rl_step(
    context: DistributedContext,
    base: StepMetrics,
    stats: PolicyStats,
    timings: StepTimings,
    *,
    policy_lag: int,
    rollout: RolloutMetrics,
) -> RLStepMetrics:
    """`base` (already summed over ranks) with the policy statistics summed and the timings maxed over ranks."""
    step_stats = PolicyStats(*context.sum(stats.as_list()))
    wait, materialize, train, checkpoint = context.max(
        [timings.wait, timings.materialize, timings.train, timings.checkpoint]
    )
    return RLStepMetrics(
        **asdict(base),
        policy_lag=policy_lag,
        **step_stats.means(),
        completion_tokens_mean=base.loss_tokens / max(base.samples, 1),
        wait_seconds=wait,
        materialize_seconds=materialize,
        train_seconds=train,
        checkpoint_seconds=checkpoint,
        rollout=rollout,
    )
