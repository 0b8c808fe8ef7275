"""What a family adapter writes: text, added tokens by id, and image slots, each tagged with its message.

Adapters describe a conversation the way its chat template would print it, but as typed pieces instead of
one string. That keeps four facts the string loses: which pieces the assistant wrote (the loss mask),
which message wrote them (bridging appends only new messages), which come from the message's own content
rather than from the template (the content mask), and where images go (the placeholder run
is expanded from the layout, never by searching the text). `template_text` joins the pieces back into the
exact string the Jinja template renders, which is what the load-time self-check compares: pieces marked
`expansion` are what the HF processor writes around an image when it expands the template's image marker
(Gemma 3's "\n\n<start_of_image>...<end_of_image>\n\n"), so the template string leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """Plain text, tokenized together with the text pieces around it up to the next added token."""

    text: str
    message: int
    trained: bool = False
    expansion: bool = False
    """Written by the processor's image expansion, not by the chat template."""
    content: bool = False
    """Written from the message itself (its text, reasoning, tool calls, image blocks), not by the template."""


@dataclass(frozen=True, slots=True)
class Token:
    """An added token written by id (`<|im_start|>`, `<|vision_start|>`, ...), never re-tokenized."""

    token: str
    message: int
    trained: bool = False
    expansion: bool = False
    """Written by the processor's image expansion, not by the chat template."""
    content: bool = False
    """Written from the message itself (a vision marker of one of its images), not by the template."""


@dataclass(frozen=True, slots=True)
class ImageSlot:
    """Where image number `image` (conversation order) puts its placeholder run: always message content."""

    image: int
    message: int


@dataclass(frozen=True, slots=True)
class ImageRun:
    """One of several placeholder runs of image `image` (a tile of SmolVLM's block), `length` tokens long.

    Written by `FamilyAdapter.expand_images` once the layout is known, never by `write`: the runs of one image
    are joined into its one span (see `foveal.renderers.placeholders`)."""

    image: int
    message: int
    length: int


Piece = Text | Token | ImageSlot | ImageRun


def template_text(pieces: Iterable[Piece], image_token: str) -> str:
    """The string the chat template renders for these pieces: one `image_token` per image slot, and nothing of
    what the processor's expansion adds."""
    return "".join(_piece_text(piece, image_token) for piece in pieces)


def _piece_text(piece: Piece, image_token: str) -> str:
    if isinstance(piece, ImageSlot):
        return image_token
    if isinstance(piece, ImageRun) or piece.expansion:
        return ""
    return piece.text if isinstance(piece, Text) else piece.token
