"""The shape of a family adapter: what one chat template writes, as pieces, plus its quirks.

An adapter is small on purpose: `write` mirrors the Jinja template (order of turns, what each role
prints), `check` refuses content the template would silently drop, and a few class attributes say how
completions look and whether earlier turns survive later ones unchanged. Everything else (images,
tokenization, masks, bridging) is shared by the `Renderer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from foveal.renderers.families.chatml import IMAGE_PAD, STOP_TOKENS, VIDEO_PAD, ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.pieces import Piece, template_text
from foveal.renderers.messages import InvalidMessage, Message, ToolSpec, template_dicts


class FamilyAdapter(ABC):
    """One chat template, hand-written as pieces (or, for `generic`, driven through Jinja)."""

    name: ClassVar[str]
    layout_family: ClassVar[str | None]
    """Layout family of its images (None: text-only)."""
    completion: ClassVar[CompletionFormat]
    prefix_stable: ClassVar[bool]
    """True when rendering more turns never changes the tokens of earlier ones (at the message level)."""
    prefix_note: ClassVar[str]
    """Why (not): shown to users deciding between re-rendering and `Renderer.bridge`."""
    image_token: ClassVar[str] = IMAGE_PAD
    stop_tokens: ClassVar[tuple[str, ...]] = STOP_TOKENS
    closing_tokens: ClassVar[tuple[str, ...]] = ()
    """Tokens besides the stop tokens that close a message in a render without ending generation (harmony's
    `<|end|>`): `Renderer.bridge` continues after them, and closes a cut-off reply with the first of them."""
    reserved_tokens: ClassVar[tuple[str, ...]] = (IMAGE_PAD, VIDEO_PAD)
    """Added tokens that may never come out of message text (they would fake an image)."""
    vision_markers: ClassVar[tuple[str, str] | None] = None
    """Tokens that frame every placeholder run, checked around each span (None: not checked)."""
    template_image_token: ClassVar[str | None] = None
    """What the chat template prints for one image, which the processor then expands (None: `image_token`)."""

    @abstractmethod
    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        """The pieces the template writes for this conversation."""

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        """Raise InvalidMessage for content this template cannot show the model; default: accept all."""

    def template_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The dicts to give the real Jinja template for the same conversation (self-check and parity)."""
        return template_dicts(messages)

    def template_kwargs(self) -> dict[str, Any]:
        """Extra variables this adapter assumes the template was rendered with."""
        return {}

    def expand_images(self, pieces: Sequence[Piece], payloads: Mapping[int, Mapping[str, Any]]) -> list[Piece]:
        """The pieces once each image's layout is known (`payloads[i]`: image i's descriptor payload); by default
        every image slot stays one placeholder run. A family whose processor writes a block that depends on the
        layout (SmolVLM's tiles) replaces its slots here."""
        return list(pieces)

    def template_text(self, pieces: Sequence[Piece]) -> str:
        """The string the chat template itself renders for these pieces (before any processor expansion)."""
        marker = self.image_token if self.template_image_token is None else self.template_image_token
        return template_text(pieces, marker)


class TextFamilyAdapter(FamilyAdapter):
    """A text-only template: it is given each message's content as one string, as text models' templates expect."""

    def template_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        dicts = template_dicts(messages)
        for message, out in zip(messages, dicts, strict=True):
            out["content"] = message.text()
        return dicts


def refuse(field: str, value: Any, family: str, why: str) -> InvalidMessage:
    """The error for content a family's template would drop without a trace."""
    return InvalidMessage(field, value, f"content the {family} chat template renders ({why})")


def refuse_images(messages: Sequence[Message], family: str, roles: frozenset[str], where: str = "") -> None:
    """Images are only rendered in `roles`; elsewhere the template drops them."""
    for index, message in enumerate(messages):
        if message.role not in roles and message.images():
            raise refuse(f"messages[{index}].content", "<image>", family, where or f"images only in {sorted(roles)}")
