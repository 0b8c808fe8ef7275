"""Keeping the servers on the trainer's newest weights, and pacing the orchestrator on the async bound.

The trainer publishes each step's checkpoint in `trainer_state.json` (`foveal.trainer.runs.progress`). Before it
samples a step, the orchestrator pushes the newest one it has not pushed yet: pause (`wait`: requests in
flight finish first, so no rollout mixes two versions) -> update_weights(folder, version) -> resume. The
servers check the folder in full before swapping and report the version they now hold, which must be the
one pushed. When the bound does not allow the step yet, the orchestrator polls the trainer's progress,
pushing each newer checkpoint as it appears, until it does (or `orchestrator.wait_timeout_s` passes).

The orchestrator samples between pushes only, so the version a server holds is the version every rollout
of the step was sampled with. Control calls go to every endpoint (a router fans them out to its servers
itself), while rollouts use the endpoints for failover only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foveal.renderers.inference.client import RemoteInferenceClient

from foveal.trainer.runs.progress import TrainerProgress, read_progress

POLL_S = 0.05


class WeightSyncError(RuntimeError):
    """The servers and the trainer disagree about the weights, or the trainer stopped making progress."""


@dataclass
class WeightSync:
    """The endpoints (one client each), the version they hold, and the run folder the trainer publishes in."""

    clients: list[RemoteInferenceClient]
    run_dir: Path
    served_version: int
    timeout_s: float
    max_context: int | None = None
    """The servers' max_model_len (what an episode may hold), as they reported it."""
    pushes: list[tuple[int, int, float]] = field(default_factory=list)
    """(version pushed, version the servers reported, seconds) of every push, in order (a push whose
    version the servers do not report raises WeightSyncError instead)."""

    def check_servers(self) -> None:
        """Servers ahead of the trainer hold weights of another run (or of a run restarted from scratch)."""
        trainer = self.progress().step
        if self.served_version > trainer:
            raise WeightSyncError(
                f"the inference servers hold weight version {self.served_version} but the trainer is at step "
                f"{trainer}: they serve another run's weights; restart them (or start this run in a new run_dir)"
            )

    def progress(self) -> TrainerProgress:
        return read_progress(self.run_dir) or TrainerProgress()

    async def catch_up(self) -> float:
        """Push the trainer's newest checkpoint if the servers hold an older one; returns the seconds spent."""
        progress = self.progress()
        if progress.step <= self.served_version or progress.checkpoint is None:
            return 0.0
        return await self.push(progress.checkpoint, progress.step)

    async def wait_until(self, ready: Callable[[int], bool]) -> float:
        """Keep the servers current until `ready(served_version)`; returns the seconds spent pushing."""
        pushing = await self.catch_up()
        deadline = time.monotonic() + self.timeout_s
        while not ready(self.served_version):
            if time.monotonic() > deadline:
                raise WeightSyncError(
                    f"orchestrator.wait_timeout_s: the trainer published no new step in {self.timeout_s:g} s "
                    f"(servers at version {self.served_version}, trainer at step {self.progress().step}); "
                    "is the trainer running?"
                )
            await asyncio.sleep(POLL_S)
            pushing += await self.catch_up()
        return pushing

    async def push(self, checkpoint: str, version: int) -> float:
        """Load `checkpoint` into every endpoint as `version`; returns the seconds it took."""
        reported, seconds = await push_weights(self.clients, checkpoint, version)
        self.pushes.append((version, reported, seconds))
        self.served_version = version
        return seconds


async def push_weights(clients: Sequence[RemoteInferenceClient], checkpoint: str, version: int) -> tuple[int, float]:
    """pause(wait) -> update_weights -> resume on every endpoint, always resuming; each must report `version`.

    Returns the version the endpoints report and the seconds it took.
    """
    started = time.perf_counter()
    await asyncio.gather(*(client.pause("wait") for client in clients))
    try:
        answers = await asyncio.gather(*(client.update_weights(checkpoint, version) for client in clients))
    finally:
        await asyncio.gather(*(client.resume() for client in clients))
    reported = sorted({answer.weight_version for answer in answers})
    if reported != [version]:
        raise WeightSyncError(f"the servers report weight versions {reported} after loading {version} from {checkpoint}")
    return reported[0], time.perf_counter() - started
