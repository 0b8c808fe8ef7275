"""Run materialization ahead of the training step, in background threads, without reordering anything.

Reading, verifying and processing images is CPU work the accelerator should never wait for. A
`Prefetcher` keeps up to `depth` items in flight on a small thread pool (the HF image processor and
file reads release the GIL for most of their time) and hands results back strictly in input order. An
item that failed raises its own exception when the consumer reaches that item, not earlier and not on
another item. The time the consumer spends inside `next()` is measured, so a benchmark can report
which share of the step time the trainer sat waiting for data.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from foveal.renderers.errors import ContractError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PrefetchStats:
    """How long the consumer waited: `blocked_s` inside `next()`, out of `elapsed_s` since its first call."""

    items: int
    blocked_s: float
    elapsed_s: float

    @property
    def blocked_share(self) -> float:
        """Fraction of the consumer's wall time spent waiting for data (0 when nothing was consumed yet)."""
        return self.blocked_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Prefetcher(Generic[T, R]):
    """Iterate `fn(item)` for `items` in order, computed up to `depth` items ahead by `workers` threads.

    Consume it from one thread and close it (or use `with`): closing cancels what has not started and
    waits for what has. After an item's error the iterator stays usable; the next call returns the next item.
    """

    def __init__(self, items: Iterable[T], fn: Callable[[T], R], *, workers: int = 2, depth: int | None = None) -> None:
        depth = 2 * workers if depth is None else depth
        if workers < 1 or depth < 1:
            raise ContractError("prefetch", {"workers": workers, "depth": depth}, "workers >= 1 and depth >= 1")
        self._source: Iterator[T] = iter(items)
        self._fn = fn
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="foveal-prefetch")
        self._pending: deque[Future[R]] = deque()
        self._source_done = False
        self._closed = False
        self._lock = threading.Lock()
        self._consumed = 0
        self._blocked_s = 0.0
        self._started: float | None = None
        self._finished: float | None = None
        self._fill()

    def __iter__(self) -> Prefetcher[T, R]:
        return self

    def __next__(self) -> R:
        begin = time.perf_counter()
        if self._started is None:
            self._started = begin
        try:
            return self._next_result()
        finally:
            with self._lock:
                self._blocked_s += time.perf_counter() - begin

    def _next_result(self) -> R:
        if self._closed or not self._pending:
            self.close()
            raise StopIteration
        future = self._pending.popleft()
        self._fill()  # keep the window full while we wait
        index = self._consumed
        self._consumed += 1
        try:
            return future.result()
        except Exception as error:
            error.add_note(f"raised while prefetching item {index}")
            raise

    def _fill(self) -> None:
        """Submit items until `depth` are in flight; a failing source becomes an error at its position."""
        while not self._source_done and len(self._pending) < self._depth:
            try:
                item = next(self._source)
            except StopIteration:
                self._source_done = True
                return
            except Exception as error:  # delivered in order, after the items already submitted
                self._source_done = True
                failed: Future[R] = Future()
                failed.set_exception(error)
                self._pending.append(failed)
                return
            self._pending.append(self._pool.submit(self._fn, item))

    def stats(self) -> PrefetchStats:
        """Waiting so far; `elapsed_s` runs from the first `next()` to now (or to `close()`)."""
        now = self._finished if self._finished is not None else time.perf_counter()
        elapsed = 0.0 if self._started is None else now - self._started
        with self._lock:
            return PrefetchStats(items=self._consumed, blocked_s=self._blocked_s, elapsed_s=elapsed)

    def close(self) -> None:
        """Cancel items not yet started, wait for running ones, stop the threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finished = time.perf_counter()
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
