"""What a render produces: token ids, a loss mask and image spans, readable without a Renderer.

Apart from `rendering` so that `chunks`, which turns these into Tinker-shaped chunks and back for the
Renderer, does not import the Renderer in turn.
"""

from __future__ import annotations

from collections.abc import Callable
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
    when the ids end with a generation prompt (the next tokens are the model's). `message_indices` says
    which message wrote each token: an index into `messages`; `len(messages)` for the generation prompt
    (the header of the turn the model writes next); -1 for tokens no message wrote (a system turn the
    template adds for tools, or a render of Tinker chunks, which carry no messages).
    """

    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    images: tuple[RenderedImage, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    family: str = ""
    awaiting_completion: bool = False
    message_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("loss_mask", "message_indices"):
            if len(getattr(self, name)) != len(self.token_ids):
                raise InvalidMessage(name, len(getattr(self, name)), f"{len(self.token_ids)} entries, one per token")

    def __len__(self) -> int:
        return len(self.token_ids)

    def token_roles(self) -> tuple[str, ...]:
        """The role of the message that wrote each token; "assistant" for the generation prompt, "" for none."""
        roles = [message.role for message in self.messages] + ["assistant"]
        return tuple(roles[index] if index >= 0 else "" for index in self.message_indices)

    def loss_mask_where(self, keep: Callable[[int, Message], bool]) -> tuple[int, ...]:
        """The loss mask kept only on tokens of messages where `keep(index, message)` holds.

        For example only the turn of message 3: `rendered.loss_mask_where(lambda index, message: index == 3)`.
        """
        count = len(self.messages)
        kept = [0 <= index < count and keep(index, self.messages[index]) for index in range(-1, count + 1)]
        return tuple(bit if kept[index + 1] else 0 for bit, index in zip(self.loss_mask, self.message_indices))
