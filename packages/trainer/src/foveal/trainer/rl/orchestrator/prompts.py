"""Which prompts a step samples: a weighted mixture of environments, seeded, and a pure function of the step.

Prompt j of step s comes from environment i with probability weight_i / sum(weights), decided by a
`random.Random` seeded from (seed, stream, s, j). Each environment's train split is walked in a shuffled
order per epoch (seeded by (seed, stream, environment, epoch)), so over a run every row is used once
before any is used twice. Nothing is stored: the draws of step s are recomputed by replaying the
environment choices of steps 1..s-1 (a few integers each), so an orchestrator restarted at step s asks
exactly the prompts the first one would have asked.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass


class MixtureError(ValueError):
    """A mixture that cannot be sampled; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class PromptDraw:
    """One prompt of a step: which environment of the mixture (its position) and which row of its train split."""

    environment: int
    row: int


class PromptSampler:
    """The prompts of every step of a run, for environments with `sizes` train rows and relative `weights`."""

    def __init__(
        self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int, stream: str = "rl"
    ) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise MixtureError("orchestrator.environments", len(sizes), "one size and one weight per environment")
        for index, size in enumerate(sizes):
            if size < 1:
                raise MixtureError(f"orchestrator.environments[{index}]", size, "a train split with rows")
        if batch_size < 1:
            raise MixtureError("batch_size", batch_size, "at least 1")
        self.sizes, self.weights = tuple(sizes), tuple(weights)
        self.batch_size, self.seed, self.stream = batch_size, seed, stream
        self._cache: tuple[int, list[int]] = (1, [0] * len(sizes))
        """(step, rows each environment used before that step): replays resume from here."""

    def step(self, step: int) -> list[PromptDraw]:
        """The `batch_size` prompts of `step` (1-based), in order."""
        if step < 1:
            raise MixtureError("step", step, "at least 1")
        used = self._used_before(step)
        draws = []
        for environment in self._choices(step):
            draws.append(PromptDraw(environment, self._row(environment, used[environment])))
            used[environment] += 1
        return draws

    def _used_before(self, step: int) -> list[int]:
        """Rows of each environment drawn by steps 1..step-1."""
        start, used = self._cache if self._cache[0] <= step else (1, [0] * len(self.sizes))
        used = list(used)
        for earlier in range(start, step):
            for environment in self._choices(earlier):
                used[environment] += 1
        self._cache = (step, list(used))
        return used

    def _choices(self, step: int) -> list[int]:
        rng = random.Random(f"foveal.prompts:{self.seed}:{self.stream}:{step}")
        return rng.choices(range(len(self.sizes)), weights=self.weights, k=self.batch_size)

    def _row(self, environment: int, nth: int) -> int:
        epoch, position = divmod(nth, self.sizes[environment])
        return self._order(environment, epoch)[position]

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a sampler lives as long as its run
    def _order(self, environment: int, epoch: int) -> tuple[int, ...]:
        order = list(range(self.sizes[environment]))
        random.Random(f"foveal.prompts:{self.seed}:{self.stream}:{environment}:{epoch}").shuffle(order)
        return tuple(order)
