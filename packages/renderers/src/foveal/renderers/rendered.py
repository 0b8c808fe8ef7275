"""What a render produces: token ids, a loss mask and image spans, readable without a Renderer.

Apart from `rendering` so that `chunks`, which turns these into Tinker-shaped chunks and back for the
Renderer, does not import the Renderer in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.messages import InvalidMessage, Message, ToolSpec


@dataclass(frozen=True, slots=True)
class RenderedImage:
    """One image of a rendered sequence: its descriptor and its placeholder run `[offset, offset+length)`."""

    descriptor: RawImageDescriptor
    offset: int
    length: int


@dataclass(frozen=True)
class RenderedConversation:
    """Token ids, a 0/1 loss mask of the same length, the images with their spans, and what produced them.

    `messages`/`tools` are kept so `bridge` can extend the conversation; `awaiting_completion` is True
    when the ids end with a generation prompt (the next tokens are the model's).
    """

    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    images: tuple[RenderedImage, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    family: str = ""
    awaiting_completion: bool = False

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.loss_mask):
            raise InvalidMessage("loss_mask", len(self.loss_mask), f"{len(self.token_ids)} entries, one per token")

    def __len__(self) -> int:
        return len(self.token_ids)
