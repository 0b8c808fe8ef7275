"""The engine: one thread that owns the model and runs admit -> decode step -> finish, over and over.

HTTP handlers never touch the model. They `submit` a checked request and await its future; control
requests are queued as commands that the engine thread runs between two decode steps, so a weight
update or a pause never lands in the middle of a forward pass. Pause modes (wire `PauseMode`):
  abort  running completions fail with `Aborted` (503, clients retry), then the engine pauses;
  wait   nothing new starts; the pause completes once the running requests have finished;
  keep   the running batch is frozen as it is and continues after `resume`.
Requests that have not started wait in the queue while paused, each until its deadline (503 unavailable).
A weight update runs between two steps whatever the state; sequences frozen by `keep` (or still running)
then continue on the new weights over the KV cache of the old ones, and report the new weight version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from foveal.renderers.inference.wire import PauseMode, ServerState
from foveal.trainer.serving.engine.batching import RunningBatch
from foveal.trainer.serving.engine.prompt_cache import PromptCache
from foveal.trainer.serving.engine.requests import (
    Aborted,
    EngineError,
    EngineRequest,
    Overloaded,
    TokenListener,
    Unavailable,
)
from foveal.trainer.serving.engine.runner import ModelRunner, Prefill
from foveal.trainer.serving.engine.sampling import sequence_generator
from foveal.trainer.serving.engine.sequences import Sequence, Tracked
from foveal.trainer.serving.engine.stopping import Decode, StopRule

log = logging.getLogger(__name__)
T = TypeVar("T")
_IDLE_WAKE_S = 1.0
"""Upper bound on how long the idle thread sleeps before re-checking queued deadlines."""


@dataclass(frozen=True)
class EngineSettings:
    max_batch_size: int
    request_timeout_s: float
    max_queued_requests: int
    prompt_cache_entries: int
    suppressed_token_ids: tuple[int, ...] = ()
    """Tokens never sampled (the image and video placeholders of a VLM)."""


@dataclass
class EngineStats:
    """Counters for logs, benchmarks and tests (written by the engine thread only)."""

    prefills: int = 0
    prompt_cache_hits: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0
    peak_batch: int = 0


@dataclass
class _Queued:
    """A request waiting for rows: `admitted` of its `n` completions have started."""

    tracked: Tracked
    admitted: int = 0


class Engine:
    """Continuous-batching sampler around one `ModelRunner`; start it with `start()`, end with `stop()`."""

    def __init__(
        self, runner: ModelRunner, decode: Decode, model_stop_ids: tuple[int, ...], settings: EngineSettings
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.model_stop_ids = model_stop_ids
        self.batch = RunningBatch(runner, decode, settings.suppressed_token_ids)
        self.prompt_cache = PromptCache(settings.prompt_cache_entries)
        self.weight_version = 0
        self.stats = EngineStats()
        self._state: ServerState = "serving"
        self._draining: list[Future[None]] = []
        self._queue: deque[_Queued] = deque()
        self._live: set[Tracked] = set()
        self._commands: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="foveal-inference-engine", daemon=True)

    # -- any thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread; every request not yet answered fails as unavailable."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join()

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def in_flight(self) -> int:
        """Requests accepted and not yet answered (waiting to start or running)."""
        with self._wake:
            return sum(1 for tracked in self._live if not tracked.done)

    def submit(self, request: EngineRequest, on_token: TokenListener | None = None) -> Tracked:
        """Queue a checked request; its `future` resolves to an EngineResult or fails with an EngineError.
        `on_token` (streaming) is called on the engine thread with each token as it is sampled."""
        stop = StopRule.for_request(request.sampling, self.model_stop_ids)
        tracked = Tracked(request, stop, time.monotonic() + self.settings.request_timeout_s, on_token=on_token)
        with self._wake:
            if self._stopping:
                raise Unavailable("the engine is shutting down")
            if len(self._queue) >= self.settings.max_queued_requests:
                raise Overloaded(f"{len(self._queue)} requests are already waiting to start")
            self._queue.append(_Queued(tracked))
            self._live.add(tracked)
            self._wake.notify_all()
        return tracked

    def call(self, command: Callable[[], T]) -> Future[T]:
        """Run `command` on the engine thread between two decode steps; its result or error lands in the future."""
        future: Future[T] = Future()
        with self._wake:
            if self._stopping:
                future.set_exception(Unavailable("the engine is shutting down"))
                return future
            self._commands.append((command, future))
            self._wake.notify_all()
        return future

    def pause(self, mode: PauseMode) -> Future[None]:
        """Pause in `mode`; the future resolves once the engine is paused (for `wait`, once drained)."""
        done: Future[None] = Future()

        def command() -> None:
            if mode == "abort":
                self._abort_running()
            if mode == "wait" and self._state == "serving" and self._running_requests():
                self._draining.append(done)
                return
            self._state = "paused"
            done.set_result(None)

        self.call(command).add_done_callback(lambda f: f.exception() and done.set_exception(f.exception()))
        return done

    def resume(self) -> Future[None]:
        def command() -> None:
            self._state = "serving"
            for waiter in self._draining:  # a `wait` pause overtaken by resume has nothing left to wait for
                waiter.set_result(None)
            self._draining.clear()

        return self.call(command)

    def set_state(self, state: ServerState) -> None:
        """For commands only (they run on the engine thread): e.g. `updating` while weights are swapped."""
        self._state = state

    # -- engine thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._has_work():
                    self._wake.wait(_IDLE_WAKE_S)
                if self._stopping:
                    break
                commands = list(self._commands)
                self._commands.clear()
            for command, future in commands:
                self._run_command(command, future)
            self._expire_and_cancel()
            if self._state == "serving":
                self._guarded(self._admit)
                self._guarded(self._step)
            self._finish_drain()
            self._forget_done()
        self._shutdown()

    def _has_work(self) -> bool:
        if self._commands or any(q.tracked.expired() or q.tracked.cancelled for q in self._queue):
            return True
        if self._state != "serving":
            return False
        return len(self.batch) > 0 or any(self._admissible(q) for q in self._queue)

    def _admissible(self, queued: _Queued) -> bool:
        return not self._draining or queued.tracked.started

    def _run_command(self, command: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(command())
        except Exception as error:  # the caller's future carries it; the engine keeps serving
            future.set_exception(error)

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run admit/step; an unexpected error fails the running requests, never the engine thread."""
        try:
            work()
        except Exception as error:
            log.exception("inference engine step failed")
            failure = EngineError(f"engine failure: {type(error).__name__}: {error}")
            for seq in self.batch.remove(lambda seq: True):
                seq.owner.fail(failure)
            for queued in [q for q in self._queue if q.tracked.started]:
                queued.tracked.fail(failure)

    def _admit(self) -> None:
        """Prefill waiting prompts while rows are free; each prompt's completions share its prefill."""
        while self._queue and len(self.batch) < self.settings.max_batch_size:
            queued = next((q for q in self._queue if self._admissible(q)), None)
            if queued is None:
                return
            try:
                self._admit_one(queued)
            except Exception as error:  # this request fails; the engine and the other requests go on
                log.exception("admitting request %s failed", queued.tracked.request.request_id)
                self._drop(queued, EngineError(f"prefill failed: {type(error).__name__}: {error}"))

    def _drop(self, queued: _Queued, error: EngineError) -> None:
        """Fail one request and free whatever it holds: its queue entry and its rows."""
        if queued in self._queue:
            self._queue.remove(queued)
        self.batch.remove(lambda seq: seq.owner is queued.tracked)
        queued.tracked.fail(error)

    def _admit_one(self, queued: _Queued) -> None:
        tracked = queued.tracked
        rows = min(tracked.request.sampling.n - queued.admitted, self.settings.max_batch_size - len(self.batch))
        prefill = self._prefill(tracked.request)
        sequences = [self._sequence(tracked, queued.admitted + i, prefill) for i in range(rows)]
        queued.admitted += rows
        tracked.started = True
        if queued.admitted == tracked.request.sampling.n:
            self._queue.remove(queued)
        for seq in self.batch.admit(prefill, sequences):
            self._finish(seq)

    def _prefill(self, request: EngineRequest) -> Prefill:
        key = (request.prompt_ids, request.image_key)
        prefill = self.prompt_cache.get(key)
        if prefill is None:
            prefill = self.runner.prefill(request.prompt_ids, request.pixel_kwargs)
            self.prompt_cache.put(key, prefill)
            self.stats.prefills += 1
        else:
            self.stats.prompt_cache_hits += 1
        return prefill

    def _sequence(self, tracked: Tracked, index: int, prefill: Prefill) -> Sequence:
        generator = sequence_generator(tracked.request.sampling.seed, index, self.runner.device)
        return Sequence(tracked, index, generator, prefill.next_position)

    def _step(self) -> None:
        rows = len(self.batch)
        if rows:
            self.stats.decode_steps += 1
            self.stats.decoded_rows += rows
            self.stats.peak_batch = max(self.stats.peak_batch, rows)
        for seq in self.batch.step():
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        seq.owner.fill(seq.index, seq.completion(), self.weight_version)

    def _expire_and_cancel(self) -> None:
        now = time.monotonic()
        for queued in list(self._queue):
            tracked = queued.tracked
            if tracked.done:  # failed with its running rows
                self._queue.remove(queued)
            elif tracked.cancelled or tracked.expired(now):
                self._queue.remove(queued)
                waited = self.settings.request_timeout_s
                tracked.fail(Unavailable(f"the request did not start within {waited:g} s (server paused or busy)"))
        for seq in self.batch.remove(lambda seq: seq.owner.cancelled or seq.owner.done):
            seq.owner.fail(Unavailable("the request was cancelled"))

    def _abort_running(self) -> None:
        aborted = Aborted("in-flight requests were aborted by a pause; retry after resume")
        for seq in self.batch.remove(lambda seq: True):
            seq.owner.fail(aborted)
        for queued in [q for q in self._queue if q.tracked.started]:
            self._queue.remove(queued)
            queued.tracked.fail(aborted)

    def _running_requests(self) -> bool:
        return len(self.batch) > 0 or any(q.tracked.started for q in self._queue)

    def _finish_drain(self) -> None:
        if self._draining and not self._running_requests():
            self._state = "paused"
            for waiter in self._draining:
                waiter.set_result(None)
            self._draining.clear()

    def _forget_done(self) -> None:
        with self._wake:
            self._live = {tracked for tracked in self._live if not tracked.done}

    def _shutdown(self) -> None:
        stopped = Unavailable("the engine stopped")
        for seq in self.batch.remove(lambda seq: True):
            seq.owner.fail(stopped)
        with self._wake:
            for tracked in self._live:
                tracked.fail(stopped)
            for _, future in self._commands:
                future.set_exception(stopped)
            self._commands.clear()
        for waiter in self._draining:
            waiter.set_exception(stopped)
