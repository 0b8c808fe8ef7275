"""What an environment samples from: a `Policy` opens one `Episode` per rollout.

Environments speak in messages; how a turn is sampled is the policy's business. `TokenPolicy` renders
token ids and calls a Foveal inference server (the training path: exact ids, logprobs, image refs);
`ChatPolicy` calls any OpenAI-compatible `/v1/chat/completions` (evaluation of other servers, text only).
Both read prompt images from the run's content-addressed store, so a rollout records each image once,
as a `file://` URI and hash that the report and the trainer can verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.inference.wire import GenerateRequest, GenerateResponse, SamplingParams
from foveal.renderers.messages import AssistantMessage, ImagePart, Message, ToolSpec
from foveal.renderers.store import ImageStore

from foveal.verifiers.rollout import ImageAsset, Turn


class InferenceClient(Protocol):
    """Token-in/token-out sampling (Foveal's `/v1/generate`); `RemoteInferenceClient` is one."""

    async def generate(self, request: GenerateRequest, session_id: str | None = None) -> GenerateResponse: ...


class Episode(Protocol):
    """One conversation being sampled: sample a turn, add the environment's messages, repeat."""

    @property
    def length(self) -> int:
        """Tokens in the context so far (prompt, replies, environment messages), for token limits."""
        ...

    async def sample(self, sampling: SamplingParams) -> tuple[Turn, AssistantMessage]:
        """Sample the next assistant turn; returns its record and the parsed reply."""
        ...

    def extend(self, messages: Sequence[Message]) -> None:
        """Append environment messages (tool results, feedback) after the last reply."""
        ...


class Policy(Protocol):
    """Opens episodes; `store` holds prompt images, `max_context` is the served model's context (if known)."""

    store: ImageStore | None
    max_context: int | None

    def open(self, prompt: Sequence[Message], tools: Sequence[ToolSpec], session_id: str) -> Episode: ...


class PolicyError(ValueError):
    """A policy that cannot sample a conversation (no store for its images, ...): names field and value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


def store_images(
    messages: Sequence[Message], store: ImageStore | None
) -> tuple[tuple[Message, ...], tuple[ImageAsset, ...]]:
    """The messages with every image replaced by its stored `file://` URI, and those images in order.

    Storing is idempotent (content-addressed), so the renderer reading the URI again writes nothing.
    """
    assets: list[ImageAsset] = []
    out: list[Message] = []
    for index, message in enumerate(messages):
        if not message.images():
            out.append(message)
            continue
        if store is None:
            raise PolicyError(f"messages[{index}].content", "<image>", "a policy with an image store")
        parts = []
        for part in message.content:
            if isinstance(part, ImagePart):
                asset = _stored(part.image, store)
                assets.append(asset)
                part = ImagePart(image=asset.uri)
            parts.append(part)
        out.append(message.model_copy(update={"content": tuple(parts)}))
    return tuple(out), tuple(assets)


def _stored(source: object, store: ImageStore) -> ImageAsset:
    """A descriptor names an image already in the store (verified here); anything else is stored now."""
    if isinstance(source, RawImageDescriptor):
        store.read_verified(source.raw_image_uri, source.hash)
        return ImageAsset(uri=source.raw_image_uri, hash=source.hash)
    stored = store.put(source)  # type: ignore[arg-type]  # ImagePart admits only sources the store reads
    return ImageAsset(uri=stored.uri, hash=stored.hash)
