"""`Rollout`: one sampled episode, in the token space the trainer learns from, plus its score.

Each `Turn` keeps what the model saw and sampled verbatim: the prompt ids with image placeholders already
expanded, the image descriptors with their placeholder spans, the sampled ids and their logprobs. A
rollout is JSON all the way down (results files, process boundaries), so the trainer never re-tokenizes
text and never needs the renderer that produced it. `sequence()` joins a multi-turn episode into the one
sequence a `TrainingSample` is made of (token ids, loss mask, inference logprobs, mm_refs).

Episodes sampled through an OpenAI-compatible chat endpoint have no token ids: their turns carry text only
(`token_space` is False) and they are for evaluation, not training.
"""

from __future__ import annotations

import traceback
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.messages import Message

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_Finite = Annotated[float, Field(allow_inf_nan=False)]
StopReason = Literal["done", "max_turns", "max_tokens", "length", "error"]
"""Why an episode ended: the environment said so, a turn or token limit hit, a reply was cut off by
`max_tokens` (nothing to respond to), or an error (recorded in `errors`, reward 0)."""
ErrorStage = Literal["rollout", "scoring"]


class RolloutError(ValueError):
    """A turn or rollout that is inconsistent (lengths, spans, prefixes): names the field and what was wrong."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


class RolloutImage(BaseModel):
    """One image of a prompt: its descriptor and its placeholder run `[offset, offset + length)`.

    The same fields as the trainer's `MMRef`, so `MMRef.model_validate(image.model_dump())` converts it.
    """

    model_config = _FROZEN
    descriptor: RawImageDescriptor
    offset: int = Field(ge=0)
    length: int = Field(gt=0)


class ImageAsset(BaseModel):
    """An image shown in the conversation, as stored: a `file://` URI inside the run's store and its hash."""

    model_config = _FROZEN
    uri: str
    hash: str


class Turn(BaseModel):
    """One sampled assistant turn.

    `loss_mask` covers `prompt_ids + completion_ids`: 1 at every token the policy sampled in this episode
    so far (earlier turns' completions inside the prompt, and this completion), 0 at everything the
    template or the environment wrote. The last turn's ids and mask are therefore the whole episode.
    """

    model_config = _FROZEN
    prompt_ids: tuple[int, ...] = ()
    images: tuple[RolloutImage, ...] = ()
    completion_ids: tuple[int, ...] = ()
    completion_logprobs: tuple[_Finite, ...] | None = None
    loss_mask: tuple[int, ...] = ()
    text: str = Field(description="The completion as text (decoded by the server, or the chat reply).")
    finish_reason: Literal["stop", "length"]
    weight_version: int | None = Field(default=None, description="Weights that sampled it, when the server says.")

    @model_validator(mode="after")
    def _aligned(self) -> Turn:
        if self.completion_logprobs is not None and len(self.completion_logprobs) != len(self.completion_ids):
            expected = f"one logprob per completion token ({len(self.completion_ids)})"
            raise RolloutError("completion_logprobs", f"<{len(self.completion_logprobs)} values>", expected)
        tokens = len(self.prompt_ids) + len(self.completion_ids)
        if len(self.loss_mask) != tokens or any(m not in (0, 1) for m in self.loss_mask):
            raise RolloutError("loss_mask", f"<{len(self.loss_mask)} values>", f"{tokens} values, each 0 or 1")
        for index, image in enumerate(self.images):
            if image.offset + image.length > len(self.prompt_ids):
                raise RolloutError(f"images[{index}]", (image.offset, image.length), "a span inside prompt_ids")
        return self

    @property
    def token_space(self) -> bool:
        return bool(self.prompt_ids)


class ErrorRecord(BaseModel):
    """An exception caught at the rollout boundary: where it happened, its type, message and traceback tail."""

    model_config = _FROZEN
    stage: ErrorStage
    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, stage: ErrorStage, error: BaseException) -> ErrorRecord:
        tail = "".join(traceback.format_exception(error, limit=-4))
        return cls(stage=stage, type=type(error).__name__, message=str(error), traceback=tail[-4000:])


class RolloutSequence(BaseModel):
    """A whole episode as one training sequence; field names follow the trainer's `TrainingSample`."""

    model_config = _FROZEN
    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    inference_logprobs: tuple[float, ...] | None
    mm_refs: tuple[RolloutImage, ...]


class Rollout(BaseModel):
    """One episode of one example: the conversation, the sampled turns, and the rubric's verdict."""

    model_config = _FROZEN
    environment: str
    example_id: str
    sample_index: int = Field(ge=0, description="Which of the example's group of rollouts this is.")
    prompt: tuple[Message, ...]
    completion: tuple[Message, ...] = Field(default=(), description="Replies and environment responses, in order.")
    answer: str = ""
    info: dict[str, JsonValue] = Field(default_factory=dict)
    images: tuple[ImageAsset, ...] = Field(default=(), description="Every image of the conversation, in order.")
    turns: tuple[Turn, ...] = ()
    stop_reason: StopReason = "done"
    reward: _Finite = 0.0
    metrics: dict[str, _Finite] = Field(default_factory=dict)
    errors: tuple[ErrorRecord, ...] = ()
    seconds: float = Field(default=0.0, ge=0.0, description="Wall time of sampling this episode.")

    @property
    def failed(self) -> bool:
        """True when an error ended or invalidated the episode; such a rollout is scored 0."""
        return bool(self.errors)

    @property
    def token_space(self) -> bool:
        return bool(self.turns) and all(turn.token_space for turn in self.turns)

    def last_reply(self) -> str:
        """The text of the last assistant message ('' when none was sampled)."""
        replies = [m for m in self.completion if m.role == "assistant"]
        return replies[-1].text() if replies else ""

    def sequence(self) -> RolloutSequence:
        """The episode as one sequence: the last turn's ids, with every turn checked to extend the previous.

        Logprobs are 0.0 where the policy did not sample (the mask is 0 there); None when any turn lacks them.
        """
        if not self.token_space:
            raise RolloutError("turns", f"<{len(self.turns)} turns>", "at least one turn, all sampled in token space")
        for index, (before, after) in enumerate(zip(self.turns, self.turns[1:]), start=1):
            done = before.prompt_ids + before.completion_ids
            if after.prompt_ids[: len(done)] != done:
                raise RolloutError(f"turns[{index}].prompt_ids", "<diverges>", "the previous turn's ids as its prefix")
        last = self.turns[-1]
        logprobs = _joined_logprobs(self.turns)
        ids = last.prompt_ids + last.completion_ids
        return RolloutSequence(
            token_ids=ids, loss_mask=last.loss_mask, inference_logprobs=logprobs, mm_refs=last.images
        )


def _joined_logprobs(turns: tuple[Turn, ...]) -> tuple[float, ...] | None:
    """Per-token logprobs of the joined sequence: each turn's at its completion's positions, 0.0 elsewhere."""
    if any(turn.completion_logprobs is None for turn in turns):
        return None
    last = turns[-1]
    values = [0.0] * (len(last.prompt_ids) + len(last.completion_ids))
    for turn in turns:
        start = len(turn.prompt_ids)
        values[start : start + len(turn.completion_ids)] = turn.completion_logprobs or ()
    return tuple(values)
