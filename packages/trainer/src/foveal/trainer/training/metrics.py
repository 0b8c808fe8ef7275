"""Per-step training metrics: one JSON line per logged step in `<run dir>/metrics.jsonl`, optionally to W&B.

Counts are over the whole step on all ranks (the loop sums them before logging), so a line means the
same thing whatever the world size. `packing_efficiency` is the share of the micro-batch token budget
that held real tokens: tokens / (micro-batches run on all ranks, padding ones included, times
`micro_batch_tokens`). `data_wait_share` is the share of the step spent waiting for the data stream
(rendering, image materialization, collation not hidden by the background prefetch).

Only rank 0 writes. Weights & Biases is used only when `logging.wandb_project` is set, and then it must be
installed: a configured sink that silently does nothing would lose a run's metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from foveal.configs.logging import LoggingConfig
from foveal.trainer.runs.layout import METRICS_FILE, WANDB_ID_FILE

if TYPE_CHECKING:  # only a type here: reading metrics (plots, the `foveal rl` display) needs no torch
    from foveal.trainer.training.distributed import DistributedContext



class MetricsSinkError(RuntimeError):
    """A configured metrics sink that cannot be used; names the setting."""


class MetricsRow(Protocol):
    """One line of the log: its step and its values (a training step's, or an evaluation's outside any step)."""

    @property
    def step(self) -> int: ...

    def as_dict(self) -> dict[str, float | int]: ...


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did, summed over ranks."""

    step: int
    epoch: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int
    loss_tokens: int
    samples: int
    images: int
    placeholder_zero_loss: int
    micro_batches: int
    packing_efficiency: float
    step_seconds: float
    tokens_per_second: float
    data_wait_share: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class RankStep:
    """What one rank saw in a step, before the sums over ranks."""

    loss: float
    """Sum of this rank's micro-batch loss terms (the step loss is their sum over ranks)."""
    tokens: int
    samples: int
    images: int
    zeroed_samples: int
    micro_batches: int
    seconds: float
    data_wait_seconds: float


def reduce_step(
    context: DistributedContext,
    rank_step: RankStep,
    *,
    step: int,
    epoch: int,
    lr: float,
    grad_norm: float,
    loss_tokens: int,
    micro_batch_tokens: int,
) -> StepMetrics:
    """The step's metrics over all ranks: sums of counts and loss, the slowest rank's time and wait."""
    loss, tokens, samples, images, zeroed, micro_batches = context.sum(
        [
            rank_step.loss,
            rank_step.tokens,
            rank_step.samples,
            rank_step.images,
            rank_step.zeroed_samples,
            rank_step.micro_batches,
        ]
    )
    seconds, wait = context.max([rank_step.seconds, rank_step.data_wait_seconds])
    return StepMetrics(
        step=step,
        epoch=epoch,
        loss=loss,
        lr=lr,
        grad_norm=grad_norm,
        tokens=int(tokens),
        loss_tokens=loss_tokens,
        samples=int(samples),
        images=int(images),
        placeholder_zero_loss=int(zeroed),
        micro_batches=int(micro_batches),
        packing_efficiency=tokens / max(micro_batches * micro_batch_tokens, 1),
        step_seconds=seconds,
        tokens_per_second=tokens / max(seconds, 1e-9),
        data_wait_share=min(wait / max(seconds, 1e-9), 1.0),
    )


class MetricsLogger:
    """Writes metrics rows every `log_every` steps (and the last one) to JSONL and, if configured, W&B."""

    def __init__(
        self, run_dir: Path, config: LoggingConfig, enabled: bool, run_config: dict[str, Any], start_step: int
    ) -> None:
        """`enabled` is False on every rank but 0; `run_config` is the resolved config, recorded by W&B.

        Lines after `start_step` are dropped first: a run resumed from step k logs k+1... again, and a
        fresh run (k = 0) starts a fresh file.
        """
        self.path = run_dir / METRICS_FILE
        self.config = config
        self.enabled = enabled
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            truncate_after(self.path, start_step)
        self._wandb = _start_wandb(run_dir, config, run_config) if enabled and config.wandb_project else None

    def log(self, metrics: MetricsRow, last_step: int) -> None:
        if not self.enabled or (metrics.step % self.config.log_every and metrics.step != last_step):
            return
        if self.config.jsonl:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics.as_dict()) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics.as_dict(), step=metrics.step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every logged step of a metrics file, in order (empty when there is none yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop lines logged after `step`: a run resumed from that checkpoint logs those steps again, and a fresh
    run (step 0) its step-0 evaluation too."""
    kept = [row for row in read_metrics(path) if row["step"] <= step] if step else []
    if path.is_file():
        path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")


def _start_wandb(run_dir: Path, config: LoggingConfig, run_config: dict[str, Any]) -> Any:
    """A W&B run that a resumed training run continues (its id is kept in the run folder)."""
    try:
        import wandb
    except ImportError:
        raise MetricsSinkError(
            f"logging.wandb_project: the `wandb` package installed (got {config.wandb_project!r} without it)"
        ) from None
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id, encoding="utf-8")
    return wandb.init(project=config.wandb_project, dir=str(run_dir), id=run_id, resume="allow", config=run_config)
