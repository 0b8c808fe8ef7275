"""Materialize a step's samples on a bounded thread pool, in a result order that never depends on timing.

One thread cannot feed a fast accelerator with images: each costs a file read, a hash, a PNG decode and the
processor's resize and normalization, and most of that time is spent in C code that releases the GIL (zlib,
Pillow, numpy, torch), so a few threads materialize a step's images several times faster than one.
`Materializer` and `PixelCache` are safe to share between these threads (`data/materialize.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

from foveal.trainer.data.samples import TrainingSample

MAX_DEFAULT_THREADS = 8
R = TypeVar("R")


def materialize_share(
    samples: Sequence[TrainingSample],
    indices: Sequence[int],
    prepare: Callable[[TrainingSample], R],
    pool: Executor | None = None,
) -> dict[int, R]:
    """`prepare(samples[i])` for each index, concurrently on `pool` (inline without one), keyed by index.

    The first failure in index order is raised with the sample it came from in a note, after the samples
    not yet started are cancelled; the result never depends on which thread finished first.
    """
    if pool is None:
        return {i: _named(samples[i], prepare) for i in indices}
    futures: dict[int, Future[R]] = {i: pool.submit(_named, samples[i], prepare) for i in indices}
    try:
        return {i: future.result() for i, future in futures.items()}
    finally:
        for future in futures.values():
            future.cancel()


def _named(sample: TrainingSample, prepare: Callable[[TrainingSample], R]) -> R:
    try:
        return prepare(sample)
    except Exception as error:
        error.add_note(f"while materializing sample {sample.sample_id!r}")
        raise


def materialize_threads(setting: int | None) -> int:
    """`[multimodal].materialize_threads`, with None meaning min(8, this machine's CPUs)."""
    return setting if setting is not None else min(MAX_DEFAULT_THREADS, os.cpu_count() or 1)


def materialize_pool(threads: int) -> ThreadPoolExecutor | None:
    """A pool of `threads` materializing threads; None for one thread (the samples are materialized inline)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="foveal-materialize") if threads > 1 else None
