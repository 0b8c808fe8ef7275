"""Environments: datasets, an episode loop and a rubric, turning prompts into scored rollouts.

`Environment.rollout` runs one episode: open a conversation with the policy, sample a turn, ask
`is_done`, otherwise add the environment's `env_response` and sample again, within the turn and token
limits. `rollout_group` samples n episodes of one prompt and scores them together (group reward
functions, and the rewards group-relative advantages are computed from); `evaluate` does that for many
prompts with at most `max_concurrent` episodes in flight.

An exception inside an episode (a server error, a prompt the renderer refuses, a bug in an
`env_response`) is recorded on that rollout, which then scores 0: one bad example never ends a run.
`SingleTurnEnv` samples one reply; `MultiTurnEnv` leaves `env_response` to subclasses.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from foveal.renderers.inference.wire import SamplingParams
from foveal.renderers.messages import ImagePart, Message, ToolSpec

from foveal.verifiers.dataset import Dataset, DatasetError, Example, Split
from foveal.verifiers.policy import Episode, Policy, store_images
from foveal.verifiers.rollout import ErrorRecord, ImageAsset, Rollout, StopReason, Turn
from foveal.verifiers.rubric import Rubric

OnRollout = Callable[[Rollout], None]


class EnvironmentConfigError(ValueError):
    """An environment setting that cannot work: names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass
class State:
    """One episode as the hooks see it: the example, the turns so far, and the environment's own data.

    `metrics` end up in the rollout's metrics (e.g. how many tool calls failed).
    """

    example: Example
    sample_index: int
    turns: list[Turn] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Environment(ABC):
    """Base of every environment; subclasses decide when an episode ends and what the environment says."""

    def __init__(
        self,
        *,
        name: str,
        train: Dataset | None = None,
        eval: Dataset | None = None,
        rubric: Rubric | None = None,
        tools: Sequence[ToolSpec] = (),
        max_turns: int = 1,
        max_total_tokens: int | None = None,
    ) -> None:
        if max_turns < 1:
            raise EnvironmentConfigError("max_turns", max_turns, "at least 1")
        if max_total_tokens is not None and max_total_tokens < 2:
            raise EnvironmentConfigError("max_total_tokens", max_total_tokens, "at least 2 tokens, or None")
        self.name = name
        self.datasets: dict[Split, Dataset | None] = {"train": train, "eval": eval}
        self.rubric = rubric or Rubric()
        self.tools = tuple(tools)
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens

    def dataset(self, split: Split) -> Dataset:
        """The examples of `split`; an environment without that split says so by name."""
        found = self.datasets.get(split)
        if found is None:
            have = [name for name, dataset in self.datasets.items() if dataset is not None]
            raise DatasetError("split", split, f"a split of environment {self.name!r}: one of {have}")
        return found

    def setup_state(self, state: State) -> None:
        """Prepare a new episode's state (e.g. metrics that start at 0); nothing by default."""

    @abstractmethod
    async def is_done(self, messages: Sequence[Message], state: State) -> bool:
        """Whether the episode ends after the reply that `messages` ends with."""

    @abstractmethod
    async def env_response(self, messages: Sequence[Message], state: State) -> list[Message]:
        """The environment's messages after the last reply (at least one)."""

    async def rollout(
        self, example: Example, policy: Policy, sampling: SamplingParams, *, sample_index: int = 0, score: bool = True
    ) -> Rollout:
        """One episode of `example`, scored alone unless `score` is False (groups are scored together).

        An exception ends the episode with `stop_reason="error"`, is recorded, and the rollout scores 0.
        """
        started = time.perf_counter()
        state = State(example, sample_index)
        self.setup_state(state)
        prompt, assets = example.prompt, ()
        completion: list[Message] = []
        stop: StopReason = "error"
        errors: tuple[ErrorRecord, ...] = ()
        try:
            prompt, assets = store_images(example.prompt, policy.store)
            episode = policy.open(prompt, self.tools, session_id=f"{self.name}/{example.example_id}/{sample_index}")
            seeded = _seeded(sampling, example, sample_index)
            stop, more = await self._turns(episode, policy, seeded, state, prompt, completion)
            assets += more
        except Exception as error:  # noqa: BLE001 - a failing episode is recorded and scored 0, never fatal
            errors = (ErrorRecord.from_exception("rollout", error),)
            prompt = _without_unstored_images(prompt)
        rollout = Rollout(
            environment=self.name,
            example_id=example.example_id,
            sample_index=sample_index,
            prompt=prompt,
            completion=tuple(completion),
            answer=example.answer,
            info=example.info,
            images=assets,
            turns=tuple(state.turns),
            stop_reason=stop,
            metrics={"turns": float(len(state.turns)), **state.metrics},
            errors=errors,
            seconds=time.perf_counter() - started,
        )
        return await self.rubric.score(rollout) if score else rollout

    async def rollout_group(
        self,
        example: Example,
        policy: Policy,
        sampling: SamplingParams,
        n: int,
        *,
        limit: asyncio.Semaphore | None = None,
        on_rollout: OnRollout | None = None,
    ) -> list[Rollout]:
        """`n` episodes of one prompt, scored together; `limit` bounds the episodes in flight."""
        limit = limit or asyncio.Semaphore(n)

        async def one(index: int) -> Rollout:
            async with limit:
                rollout = await self.rollout(example, policy, sampling, sample_index=index, score=False)
            if on_rollout is not None:
                on_rollout(rollout)
            return rollout

        rollouts = await asyncio.gather(*(one(index) for index in range(n)))
        return await self.rubric.score_group(rollouts)

    async def evaluate(
        self,
        examples: Sequence[Example],
        policy: Policy,
        sampling: SamplingParams,
        *,
        rollouts_per_example: int = 1,
        max_concurrent: int = 8,
        on_rollout: OnRollout | None = None,
    ) -> list[list[Rollout]]:
        """Scored groups of `rollouts_per_example` episodes per example, in example order."""
        for name, value in (("rollouts_per_example", rollouts_per_example), ("max_concurrent", max_concurrent)):
            if value < 1:
                raise EnvironmentConfigError(name, value, "at least 1")
        limit = asyncio.Semaphore(max_concurrent)
        groups = [
            self.rollout_group(example, policy, sampling, rollouts_per_example, limit=limit, on_rollout=on_rollout)
            for example in examples
        ]
        return list(await asyncio.gather(*groups))

    async def _turns(
        self,
        episode: Episode,
        policy: Policy,
        sampling: SamplingParams,
        state: State,
        prompt: tuple[Message, ...],
        completion: list[Message],
    ) -> tuple[StopReason, tuple[ImageAsset, ...]]:
        """The turn loop; returns why it stopped and the images the environment added."""
        assets: tuple[ImageAsset, ...] = ()
        while True:
            budget = self._budget(episode, policy, sampling.max_tokens)
            if budget < 1:
                return "max_tokens", assets
            turn, reply = await episode.sample(sampling.model_copy(update={"max_tokens": budget}))
            state.turns.append(turn)
            completion.append(reply)
            if turn.finish_reason == "length":
                return "length", assets
            if await self.is_done((*prompt, *completion), state):
                return "done", assets
            if len(state.turns) >= self.max_turns:
                return "max_turns", assets
            response = await self.env_response((*prompt, *completion), state)
            if not response:
                raise EnvironmentConfigError("env_response", [], "at least one message, or is_done returning True")
            response, added = store_images(response, policy.store)
            assets += added
            completion.extend(response)
            episode.extend(response)

    def _budget(self, episode: Episode, policy: Policy, max_tokens: int) -> int:
        """Tokens the next turn may sample: max_tokens, cut to what the token limits leave."""
        limits = [x for x in (self.max_total_tokens, policy.max_context) if x is not None]
        return min([max_tokens, *(limit - episode.length for limit in limits)])


class SingleTurnEnv(Environment):
    """One prompt, one reply, scored by the rubric."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "max_turns": 1})

    async def is_done(self, messages: Sequence[Message], state: State) -> bool:
        return True

    async def env_response(self, messages: Sequence[Message], state: State) -> list[Message]:
        raise EnvironmentConfigError("env_response", self.name, "not to be called: the episode ends after one reply")


class MultiTurnEnv(Environment):
    """Replies and environment messages alternate until `is_done`, `max_turns` or the token limit.

    Subclasses implement `env_response`; `is_done` defaults to never (the limits end the episode).
    """

    def __init__(self, *, max_turns: int = 8, **kwargs: Any) -> None:
        super().__init__(max_turns=max_turns, **kwargs)

    async def is_done(self, messages: Sequence[Message], state: State) -> bool:
        return False


def _without_unstored_images(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Messages whose images could not be stored, with those images replaced by a note (a rollout is JSON)."""
    out = []
    for message in messages:
        if isinstance(message.content, str) or not message.images():
            out.append(message)
            continue
        parts = [
            part if not isinstance(part, ImagePart) or isinstance(part.image, str) else ImagePart(image="(not stored)")
            for part in message.content
        ]
        out.append(message.model_copy(update={"content": tuple(parts)}))
    return tuple(out)


def _seeded(sampling: SamplingParams, example: Example, sample_index: int) -> SamplingParams:
    """A seed per episode derived from the run's seed, so a rerun samples the same episodes."""
    if sampling.seed is None:
        return sampling
    key = f"{sampling.seed}:{example.example_id}:{sample_index}".encode()
    return sampling.model_copy(update={"seed": zlib.crc32(key) & 0x7FFFFFFF})
