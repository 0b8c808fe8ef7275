"""Prefetcher: results in input order, errors at their own item, clean shutdown, measured waiting."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from foveal.renderers.errors import ContractError, MissingAsset
from foveal.trainer.data.prefetch import Prefetcher


def jittered_square(item: int) -> int:
    time.sleep(random.Random(item).uniform(0, 0.01))  # later items often finish first
    return item * item


def test_results_come_back_in_input_order_despite_uneven_work() -> None:
    with Prefetcher(range(40), jittered_square, workers=4, depth=8) as prefetched:
        assert list(prefetched) == [i * i for i in range(40)]


def test_an_error_surfaces_at_its_own_item_and_later_items_still_arrive() -> None:
    def work(item: int) -> int:
        if item == 3:
            raise MissingAsset("raw_image_uri", f"item {item}", "an existing file")
        return item

    with Prefetcher(range(6), work, workers=3) as prefetched:
        assert [next(prefetched) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(MissingAsset) as caught:
            next(prefetched)
        assert caught.value.value == "item 3"
        assert any("item 3" in note for note in caught.value.__notes__)
        assert list(prefetched) == [4, 5]


def test_a_failing_source_raises_after_the_items_it_produced() -> None:
    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise OSError("sample shard unreadable")

    prefetched = Prefetcher(source(), lambda x: x + 10, workers=2)
    assert [next(prefetched), next(prefetched)] == [10, 11]
    with pytest.raises(OSError, match="unreadable"):
        next(prefetched)
    assert list(prefetched) == []


def test_work_runs_ahead_of_the_consumer_up_to_depth() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            started.append(item)
        return item

    prefetched = Prefetcher(range(100), work, workers=2, depth=5)
    deadline = time.monotonic() + 5
    while len(started) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert sorted(started) == [0, 1, 2, 3, 4]  # before any next(): exactly `depth` items, no more
    prefetched.close()


def test_close_cancels_pending_work_and_stops_iteration() -> None:
    release = threading.Event()
    done: list[int] = []

    def work(item: int) -> int:
        release.wait(5)
        done.append(item)
        return item

    prefetched = Prefetcher(range(50), work, workers=1, depth=10)
    threading.Timer(0.05, release.set).start()
    prefetched.close()
    assert done == [0]  # the running item finished; the nine queued behind it never started
    assert list(prefetched) == []
    prefetched.close()  # idempotent


def test_blocked_time_covers_waiting_for_slow_work() -> None:
    with Prefetcher(range(4), lambda x: time.sleep(0.06) or x, workers=1, depth=2) as prefetched:
        assert list(prefetched) == [0, 1, 2, 3]
        stats = prefetched.stats()
    assert stats.items == 4
    assert stats.blocked_s >= 0.2  # 4 x 60 ms of work, done one at a time while the consumer waits
    assert stats.blocked_share > 0.8


def test_ready_items_cost_almost_no_blocked_time() -> None:
    done = threading.Semaphore(0)

    def prepare(x: int) -> int:
        done.release()
        return x

    with Prefetcher(range(5), prepare, workers=2, depth=5) as prefetched:
        for _ in range(5):  # the "training step" lasts until every item was prepared (no timing guess)
            assert done.acquire(timeout=30)
        time.sleep(0.1)
        items = []
        for item in prefetched:
            items.append(item)
            time.sleep(0.02)
        stats = prefetched.stats()
    assert items == list(range(5))
    # Blocked time is only queue hand-offs here; the bound is loose so a loaded CI machine cannot flake it.
    assert stats.blocked_share < 0.25


@pytest.mark.parametrize(("workers", "depth"), [(0, 1), (1, 0)])
def test_non_positive_workers_or_depth_are_refused(workers: int, depth: int) -> None:
    with pytest.raises(ContractError):
        Prefetcher([1], lambda x: x, workers=workers, depth=depth)
