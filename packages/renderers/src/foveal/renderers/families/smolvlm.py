"""SmolVLM2 Instruct (e.g. SmolVLM2-2.2B-Instruct): `Role: content<end_of_utterance>` turns, tiled image blocks.

What makes it different, all mirrored from its published chat template and SmolVLMProcessor:
- `<|im_start|>` once, written by the template (the tokenizer adds no BOS), then every message in order as its
  role capitalized (`System`, `User`, `Assistant`), `:` and a space (no space when the content's first part is
  an image), the content, `<end_of_utterance>\\n`. No default system turn.
- The template reads content as a list of parts: a text part prints its text as is, an image part prints
  `<image>`. Given a plain string it would print nothing (it loops over characters); here a string is one text
  part, the way every SmolVLM2 example writes it, and it is given to the template that way. An empty list of parts
  renders like empty text (the published template raises on it: it reads the first part's type).
- SmolVLMProcessor replaces each `<image>` by the image's block (`foveal.renderers.layout.smolvlm.image_block`):
  per tile `<fake_token_around_image><row_R_col_C>` + `<image>` x image_seq_len, `\\n` after each row of tiles,
  then `\\n<fake_token_around_image><global-img>` + `<image>` x image_seq_len + `<fake_token_around_image>`. The
  block depends on the layout, so `expand_images` writes it (all `expansion` content pieces); the image's
  placeholders are one run per tile, joined into one span (`placeholder_runs` in the payload).
- No tools, tool calls or reasoning: `tools`, `tool_calls` and `reasoning_content` would be dropped silently, and
  a tool message would print a `Tool:` turn the model never saw; all are refused.
- The generation prompt is `Assistant:` with no space: the model writes the space itself, so a completion's
  leading space is not part of the parsed content (`lead`). A completion ends with `<end_of_utterance>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from foveal.renderers.families.base import FamilyAdapter, refuse
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.pieces import ImageRun, ImageSlot, Piece, Text, Token
from foveal.renderers.layout.smolvlm import FAKE_TOKEN, GLOBAL_TOKEN, IMAGE_TOKEN, image_block
from foveal.renderers.messages import AssistantMessage, ImagePart, Message, ToolSpec, template_dicts

BOS, END_OF_UTTERANCE, VIDEO = "<|im_start|>", "<end_of_utterance>", "<video>"
MAX_TILE_SIDE = 6
"""The released tokenizers have `<row_R_col_C>` for R, C in 1..6."""
ROW_COL_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, MAX_TILE_SIDE + 1) for c in range(1, MAX_TILE_SIDE + 1))
GENERATION_PROMPT = "Assistant:"
_ROLES = ("system", "user", "assistant")


class SmolVLMFamily(FamilyAdapter):
    name = "smolvlm"
    layout_family = "smolvlm"
    image_token = IMAGE_TOKEN
    reserved_tokens = (IMAGE_TOKEN, FAKE_TOKEN, GLOBAL_TOKEN, VIDEO, *ROW_COL_TOKENS)
    stop_tokens = (END_OF_UTTERANCE,)
    completion = CompletionFormat(reasoning=False, tool_calls=False, lead=" ")
    prefix_stable = True
    prefix_note = (
        "Each message is written once, in order, with no default system turn, so a longer conversation starts with "
        "the text of a shorter one. Re-tokenizing sampled text can still differ from the sampled ids; `bridge` "
        "keeps them."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        if tools:
            raise refuse("tools", [t.function.name for t in tools], self.name, "it has no tool section")
        for index, message in enumerate(messages):
            if message.role not in _ROLES:
                raise refuse(f"messages[{index}].role", message.role, self.name, "only system, user and assistant")
            if isinstance(message, AssistantMessage) and message.tool_calls:
                raise refuse(f"messages[{index}].tool_calls", message.tool_calls, self.name, "no tool calls")
            if isinstance(message, AssistantMessage) and message.reasoning_content is not None:
                why = "no reasoning field"
                raise refuse(f"messages[{index}].reasoning_content", message.reasoning_content, self.name, why)

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.token(BOS, -1)  # the template's own, whatever the messages
        for index, message in enumerate(messages):
            trained = message.role == "assistant"
            parts = [message.content] if isinstance(message.content, str) else list(message.content)
            opens_with_image = bool(parts) and isinstance(parts[0], ImagePart)
            out.text(message.role.capitalize() + (":" if opens_with_image else ": "), index)
            for part in parts:
                if isinstance(part, ImagePart):
                    out.pieces.append(ImageSlot(len(out.images), index))
                    out.images.append(part)
                else:
                    out.text(part if isinstance(part, str) else part.text, index, trained, content=True)
            out.token(END_OF_UTTERANCE, index, trained)
            out.text("\n", index)
        if add_generation_prompt:
            out.text(GENERATION_PROMPT, len(messages))
        return out

    def template_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """String content as one text part, the form the template reads."""
        dicts = template_dicts(messages)
        for out in dicts:
            if isinstance(out["content"], str):
                out["content"] = [{"type": "text", "text": out["content"]}]
        return dicts

    def expand_images(self, pieces: Sequence[Piece], payloads: Mapping[int, Mapping[str, Any]]) -> list[Piece]:
        """Each image slot as SmolVLMProcessor's block for its tile grid (see `image_block`)."""
        out: list[Piece] = []
        for piece in pieces:
            if not isinstance(piece, ImageSlot):
                out.append(piece)
                continue
            payload = payloads[piece.image]
            rows, columns = payload["tile_grid"]
            per_tile = payload["num_placeholder_tokens"] // payload["placeholder_runs"]
            for kind, value in image_block(rows, columns):
                if kind == "token":
                    out.append(Token(value, piece.message, expansion=True, content=True))
                elif kind == "text":
                    out.append(Text(value, piece.message, expansion=True, content=True))
                else:
                    out.append(ImageRun(piece.image, piece.message, per_tile))
        return out
