"""The target's greedy responses to many prompts: batched `generate`, the batches shared out over ranks.

The prompts are cut, in order, into batches of `dflash.generate_batch_size`; rank r answers batches r,
r + world, ... and the ranks then swap their token lists (`DistributedContext.gather_token_lists`, plain
int64 tensors), so every rank holds every response. A batch holds the same prompts in the same order
whatever the world size, so the responses do not depend on the number of processes (left padding in a
batch does change its arithmetic slightly, as in any batched decoding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from foveal.trainer.data.collate import Packable
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.dflash.target import FrozenTarget
from foveal.trainer.training.distributed import DistributedContext, rank_share
from foveal.trainer.training.progress import CountProgress


def generation_batches(count: int, batch_size: int) -> list[range]:
    """Consecutive index ranges of at most `batch_size` covering `count` prompts."""
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def regenerate(
    prompts: Sequence[TrainingSample],
    materialize: Callable[[TrainingSample], Packable],
    target: FrozenTarget,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    batch_size: int,
    context: DistributedContext,
) -> list[list[int]]:
    """The target's greedy response to every prompt (index-aligned with `prompts`), each rank answering its share."""
    batches = generation_batches(len(prompts), batch_size)
    mine = rank_share(batches, context)
    answered: list[list[int]] = []
    with CountProgress(
        sum(map(len, mine)),
        "dflash: target responses (this rank's share)",
        context.is_main,
    ) as bar:
        for batch in mine:
            answered.extend(
                target.greedy_continuations([materialize(prompts[i]) for i in batch], max_new_tokens, stop_ids)
            )
            bar.advance(len(batch))
    responses: dict[int, list[int]] = {}
    for rank, lists in enumerate(context.gather_token_lists(answered)):
        indices = [i for batch in batches[rank :: context.world_size] for i in batch]
        responses.update(zip(indices, lists, strict=True))
    return [responses[index] for index in range(len(prompts))]
