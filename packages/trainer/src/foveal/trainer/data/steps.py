"""One optimizer step's data: plan the samples into packed rows, take this rank's share, materialize, collate.

Every rank computes the same plan: rows of at most `trainer.seq_len` tokens (`plan_micro_batches`), grouped in
plan order into micro-batches of at most `trainer.micro_batch_tokens` tokens, each collated into one packed row.
Rank r takes micro-batches r, r + world, ... and materializes only their images; a rank with fewer than the
largest share repeats one of its micro-batches with every weight 0, so all ranks run the same number of
forward/backward passes (FSDP2 collectives) without changing the loss. Shared by SFT, RL and DFlash.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from foveal.trainer.data.collate import Packable, PackedBatch, fit_sample, collate_packed
from foveal.trainer.data.packing import OverlongText, PackItem, plan_micro_batches
from foveal.trainer.data.pool import materialize_share
from foveal.trainer.data.positions import PositionScheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.training.distributed import DistributedContext, padded_share
from foveal.trainer.training.metrics import RankStep

@dataclass(frozen=True)
class PackingLimits:
    """How a step is cut: samples per step, tokens per packed row, tokens per micro-batch, overlong text."""

    batch_size: int
    seq_len: int
    micro_batch_tokens: int
    overlong_text: OverlongText = "error"


@dataclass(frozen=True)
class StepBatch:
    """This rank's part of one optimizer step, and where the data stands after it."""

    micro_batches: tuple[PackedBatch, ...]
    """This rank's share, padded with weightless copies to the largest share."""
    tokens: int
    samples: int
    images: int
    zeroed_samples: int
    position: DataPosition
    """The data position after this step (what a checkpoint taken now resumes from)."""

    def rank_step(self, loss: float, seconds: float, waited: float) -> RankStep:
        """This rank's metrics of the step: its loss terms' sum, its counts, and how long it took and waited."""
        counts = (self.tokens, self.samples, self.images, self.zeroed_samples, len(self.micro_batches))
        return RankStep(loss, *counts, seconds=seconds, data_wait_seconds=waited)


def plan_step(items: Sequence[PackItem], limits: PackingLimits) -> list[list[int]]:
    """Micro-batches as lists of indices into `items`: rows of <= seq_len tokens, grouped up to micro_batch_tokens.

    Rows come from `plan_micro_batches` (which rejects an overlong multimodal sample, and an overlong
    text one unless `overlong_text="truncate"`, naming its sample id); consecutive rows join one
    micro-batch while their total fits, and a micro-batch keeps its rows' samples in row order.
    """
    lengths = [min(item.length, limits.seq_len) for item in items]
    groups: list[list[int]] = []
    used = limits.micro_batch_tokens
    for row in plan_micro_batches(items, limits.seq_len, limits.overlong_text):
        size = sum(lengths[i] for i in row)
        if used + size > limits.micro_batch_tokens:
            groups.append([])
            used = 0
        groups[-1].extend(row)
        used += size
    return groups


def count_steps(dataset_size: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps of the run: `max_steps`, or fewer when `epochs` passes run out first."""
    return min(max_steps, -(-(dataset_size * epochs) // batch_size))


def pack_step(
    samples: Sequence[TrainingSample],
    materialize: Callable[[TrainingSample], Packable],
    positions: PositionScheme,
    limits: PackingLimits,
    context: DistributedContext,
    position: DataPosition,
    pool: Executor | None = None,
) -> StepBatch:
    """This rank's micro-batches of one step's samples: plan, take the rank's share, materialize, collate.

    Shared by SFT and RL. Only this rank's share (and its padding) is materialized, on `pool` when given (see
    `materialize_share`); a text sample longer than `seq_len` is cut when `overlong_text` allows it
    (`plan_step` refused the rest).
    """
    items = [PackItem(sample.sample_id, sample.num_tokens, bool(sample.mm_refs)) for sample in samples]
    plan = plan_step(items, limits)
    mine, padding = padded_share(plan, context)
    needed = list(dict.fromkeys(i for group in mine + padding for i in group))
    fit = materialize_share(samples, needed, functools.partial(_fitted, materialize, limits), pool)
    batches = [collate_packed([fit[i] for i in group], positions) for group in mine + padding]
    batches[len(mine) :] = [_weightless(batch) for batch in batches[len(mine) :]]
    real = [i for group in mine for i in group]
    return StepBatch(
        micro_batches=tuple(batches),
        tokens=sum(len(fit[i].token_ids) for i in real),
        samples=len(real),
        images=sum(len(samples[i].mm_refs) for i in real),
        zeroed_samples=sum(bool(getattr(fit[i], "missing_images", ())) for i in real),
        position=position,
    )


def _fitted(
    materialize: Callable[[TrainingSample], Packable], limits: PackingLimits, sample: TrainingSample
) -> Packable:
    """The sample materialized, at the length the plan gives it."""
    return fit_sample(materialize(sample), limits.seq_len, limits.overlong_text)


def _weightless(batch: PackedBatch) -> PackedBatch:
    """A padding micro-batch: the same tensors, every sample weighted 0 (runs the collectives, adds no loss)."""
    return dataclasses.replace(batch, sample_weights=batch.sample_weights.new_zeros(batch.sample_weights.shape))


