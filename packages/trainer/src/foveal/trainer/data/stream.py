"""The step stream: a dataset's steps, in a seeded per-epoch shuffle, prepared ahead in a background thread.

A step takes the next `batch_size` conversations of a per-epoch shuffle (seeded by the shuffle seed and the
epoch), so the data position (epoch, index, shuffle seed) says exactly what comes next and is all a
checkpoint needs. Every rank renders the whole step (cheap: tokens and a cached store lookup per image).

Steps are prepared one or two ahead in a background thread (`Prefetcher`), so rendering, image reads and
the processor overlap the previous step's compute; the renderer is only ever used from that one thread.
Within a step, the samples' images are materialized on a small thread pool (`[multimodal].materialize_threads`):
file reads, PNG decoding and the processor's numpy/torch work release the GIL for much of their time, and one
thread alone cannot feed a fast accelerator. Results keep the plan's order whatever order they finish in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from foveal.trainer.data.collate import Packable
from foveal.trainer.data.pool import materialize_pool
from foveal.trainer.data.positions import PositionScheme
from foveal.trainer.data.prefetch import Prefetcher
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.data.sources import Conversation, ConversationSource, DatasetError
from foveal.trainer.data.steps import PackingLimits, StepBatch, pack_step
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.training.distributed import DistributedContext


def epoch_order(size: int, shuffle_seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch: a pure function of (size, seed, epoch), so resuming recomputes it."""
    order = list(range(size))
    random.Random(f"foveal.sft:{shuffle_seed}:{epoch}").shuffle(order)
    return order


class StepStream:
    """Yields this rank's `StepBatch` for each step from `start`, prepared ahead in a background thread."""

    def __init__(
        self,
        source: ConversationSource,
        render: Callable[[Conversation], TrainingSample],
        materialize: Callable[[TrainingSample], Packable],
        positions: PositionScheme,
        limits: PackingLimits,
        context: DistributedContext,
        epochs: int,
        materialize_threads: int = 1,
    ) -> None:
        if materialize_threads < 1:
            raise DatasetError("multimodal.materialize_threads", materialize_threads, "at least 1 thread")
        self.source, self.render, self.materialize = source, render, materialize
        self.positions, self.limits, self.context, self.epochs = positions, limits, context, epochs
        self.materialize_threads = materialize_threads
        self._prefetcher: Prefetcher[tuple[list[int], DataPosition], StepBatch] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def steps(self, start: DataPosition, count: int) -> Iterator[StepBatch]:
        """`count` steps starting at `start` (fewer if the epochs run out)."""
        if self._pool is None:
            self._pool = materialize_pool(self.materialize_threads)
        self._prefetcher = Prefetcher(self._step_indices(start, count), self._prepare, workers=1, depth=2)
        return self._prefetcher

    def close(self) -> None:
        """Stop the background preparation (cancels steps not started, waits for the running one), then the pool."""
        if self._prefetcher is not None:
            self._prefetcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> StepStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _step_indices(self, start: DataPosition, count: int) -> Iterator[tuple[list[int], DataPosition]]:
        """(sample indices, position after) per step; a step may span the end of one epoch and the next."""
        epoch, index, size = start.epoch, start.index, len(self.source)
        order = epoch_order(size, start.shuffle_seed, epoch)
        for _ in range(count):
            taken: list[int] = []
            while len(taken) < self.limits.batch_size and epoch < self.epochs:
                take = order[index : index + self.limits.batch_size - len(taken)]
                taken.extend(take)
                index += len(take)
                if index == size:
                    epoch, index = epoch + 1, 0
                    order = epoch_order(size, start.shuffle_seed, epoch)
            if not taken:
                return
            yield taken, DataPosition(epoch=epoch, index=index, shuffle_seed=start.shuffle_seed)

    def _prepare(self, step: tuple[list[int], DataPosition]) -> StepBatch:
        indices, position = step
        samples = [self.render(self.source[i]) for i in indices]
        return pack_step(samples, self.materialize, self.positions, self.limits, self.context, position, self._pool)


