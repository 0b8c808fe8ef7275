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

    `content_mask` is 1 on tokens the message itself wrote and 0 on what the template wrote around it. Content:
    a message's text (as the template prints it, e.g. trimmed), an assistant turn's body (its `<think>` block,
    text and tool calls, up to but not including the stop token), a tool result's text, and each image's whole
    block (vision markers and placeholders). Template: role headers, turn markers and separators, BOS, tool
    preambles and default system turns, the generation prompt (also a `<think>\n` it opens), and the tokens
    `bridge` adds to close a turn. Sampled ids from `append_completion` are content except a final stop token.
    Like the other masks, a token is content when its last character is. The `generic` family (the template
    run as Jinja) cannot tell and marks nothing; Tinker chunk renders carry no messages and mark nothing.
    """

    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    images: tuple[RenderedImage, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    family: str = ""
    awaiting_completion: bool = False
    message_indices: tuple[int, ...] = ()
    content_mask: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("loss_mask", "message_indices", "content_mask"):
            if len(getattr(self, name)) != len(self.token_ids):
                raise InvalidMessage(name, len(getattr(self, name)), f"{len(self.token_ids)} entries, one per token")

    def __len__(self) -> int:
        return len(self.token_ids)

    def token_roles(self) -> tuple[str, ...]:
        """The role of the message that wrote each token; "assistant" for the generation prompt, "" for none."""
        roles = [message.role for message in self.messages] + ["assistant"]
        return tuple(roles[index] if index >= 0 else "" for index in self.message_indices)

    def content_of(self, index: int) -> tuple[int, ...]:
        """0/1 per token: 1 on the content tokens of message `index` (see `content_mask`)."""
        return tuple(int(bit == 1 and owner == index) for bit, owner in zip(self.content_mask, self.message_indices))

    def loss_mask_where(self, keep: Callable[[int, Message], bool]) -> tuple[int, ...]:
        """The loss mask kept only on tokens of messages where `keep(index, message)` holds.

        For example only the turn of message 3: `rendered.loss_mask_where(lambda index, message: index == 3)`.
        """
        count = len(self.messages)
        kept = [0 <= index < count and keep(index, self.messages[index]) for index in range(-1, count + 1)]
        return tuple(bit if kept[index + 1] else 0 for bit, index in zip(self.loss_mask, self.message_indices))
