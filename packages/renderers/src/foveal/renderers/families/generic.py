"""The fallback family: any tokenizer's own Jinja chat template, driven through `apply_chat_template`.

It renders the template to a string and cuts it into pieces at the image token and the stop tokens
(added tokens, so the cuts keep tokenization exact). Which message wrote which text is found by
rendering each prefix of the conversation: message k owns the text between the renders of the first k
and k+1 messages, and an assistant message's trained text starts where the render of the messages before
it with a generation prompt ends. That costs one template render per message (slow, but general) and
needs a template that renders earlier turns the same way when more follow; where it does not, and an
assistant turn cannot be located, rendering refuses instead of guessing a loss mask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.families.base import FamilyAdapter
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.pieces import ImageSlot, Text, Token
from foveal.renderers.messages import InvalidMessage, Message, ToolSpec


class GenericFamily(FamilyAdapter):
    """Drives `tokenizer.apply_chat_template`; never hand-written, so never out of date, but slower."""

    name = "generic"
    completion = CompletionFormat(reasoning=False, tool_calls=False)
    prefix_stable = False
    prefix_note = "Unknown template: probed at load (see `prefix_stable`)."

    def __init__(
        self,
        tokenizer: Any,
        *,
        layout_family: str | None,
        image_token: str | None,
        stop_tokens: tuple[str, ...],
        prefix_stable: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.layout_family = layout_family  # type: ignore[misc]
        self.image_token = image_token or ""  # type: ignore[misc]
        self.stop_tokens = stop_tokens  # type: ignore[misc]
        self.reserved_tokens = (image_token,) if image_token else ()  # type: ignore[misc]
        self.prefix_stable = prefix_stable  # type: ignore[misc]
        self.prefix_note = (  # type: ignore[misc]
            "Probed at load: rendering more turns kept the earlier turns' text unchanged."
            if prefix_stable
            else "Probed at load: this template rewrites earlier turns when more follow; use `Renderer.bridge`."
        )
        cuts = [re.escape(t) for t in (image_token, *stop_tokens) if t]
        self._cut = re.compile("(" + "|".join(cuts) + ")") if cuts else None

    def render_text(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> str:
        """The template's string for these messages (images as one image token each)."""
        return self.tokenizer.apply_chat_template(
            self.template_messages(messages),
            tools=[tool.template_dict() for tool in tools] or None,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **self.template_kwargs(),
        )

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        full = self.render_text(messages, tools, add_generation_prompt)
        out = ChatWriter()
        start = 0
        for index, message in enumerate(messages):
            end = self._prefix_end(messages[: index + 1], tools, full, index, message.role == "assistant")
            trained_from = self._assistant_start(messages, index, tools, full) if message.role == "assistant" else end
            self._cut_into(out, full[start:end], index, trained_from - start)
            for part in message.images():
                out.images.append(part)
            start = end
        self._cut_into(out, full[start:], len(messages), len(full))
        slots = sum(isinstance(p, ImageSlot) for p in out.pieces)
        if slots != len(out.images):
            raise PlaceholderMismatch("messages", slots, f"{len(out.images)} image tokens (one per image part)")
        return out

    def _prefix_end(
        self, head: Sequence[Message], tools: Sequence[ToolSpec], full: str, index: int, needed: bool
    ) -> int:
        """Where the text of message `index` ends in `full`; refuses when an assistant turn is rewritten."""
        text = self.render_text(head, tools, False)
        if full.startswith(text):
            return len(text)
        if needed:
            raise InvalidMessage(f"messages[{index}]", "<assistant turn>", "a template that keeps earlier turns as is")
        return 0 if index == 0 else self._prefix_end(head[:-1], tools, full, index - 1, False)

    def _assistant_start(self, messages: Sequence[Message], index: int, tools: Sequence[ToolSpec], full: str) -> int:
        if index == 0:
            raise InvalidMessage(
                "messages[0].role", "assistant", "a conversation that does not open with the assistant"
            )
        prompt = self.render_text(messages[:index], tools, True)
        if not full.startswith(prompt):
            raise InvalidMessage(f"messages[{index}]", "<assistant turn>", "a template that keeps earlier turns as is")
        return len(prompt)

    def _cut_into(self, out: ChatWriter, text: str, message: int, trained_from: int) -> None:
        """Text -> pieces, cutting at the image token and stop tokens; chars from `trained_from` are trained."""
        position, image = 0, sum(isinstance(p, ImageSlot) for p in out.pieces)
        for chunk in self._cut.split(text) if self._cut else [text]:
            trained = position >= trained_from
            if chunk == self.image_token:
                out.pieces.append(ImageSlot(image, message))
                image += 1
            elif chunk in self.stop_tokens:
                out.pieces.append(Token(chunk, message, trained))
            elif chunk:
                split = max(0, min(len(chunk), trained_from - position))
                out.pieces.extend(Text(c, message, t) for c, t in ((chunk[:split], False), (chunk[split:], True)) if c)
            position += len(chunk)
        _untrain_after_last_stop(out.pieces, message, self.stop_tokens)


def _untrain_after_last_stop(pieces: list[Any], message: int, stop_tokens: tuple[str, ...]) -> None:
    """The separator after an assistant turn's stop token (e.g. `\\n`) is template, not model output."""
    own = [i for i, piece in enumerate(pieces) if piece.message == message]
    stops = [i for i in own if isinstance(pieces[i], Token) and pieces[i].token in stop_tokens and pieces[i].trained]
    for position in own:
        piece = pieces[position]
        if stops and position > stops[-1] and isinstance(piece, Text) and piece.trained:
            pieces[position] = Text(piece.text, message, False)
