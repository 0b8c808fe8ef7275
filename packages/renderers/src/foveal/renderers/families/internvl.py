"""InternVL 3.5 (HF-format checkpoints, e.g. InternVL3_5-1B-HF): plain ChatML, images as tiled `<img>` blocks.

What makes it different, all mirrored from its published chat template and InternVLProcessor:
- No default system turn: every message, whatever its role, is `<|im_start|>{role}\\n{content}<|im_end|>\\n`
  (Qwen2-VL's template adds "You are a helpful assistant." when there is no system message; this one does not).
- String content is printed as is. In a list, each image part prints `<IMG_CONTEXT>\\n` and each text part its
  text. InternVLProcessor replaces that `<IMG_CONTEXT>` with `<img>` + `<IMG_CONTEXT>` x (tiles *
  image_seq_length) + `</img>` (the layout's tile count, thumbnail included); the `\\n` after it is the
  template's and is tokenized with the text that follows. Here `<img>` / `</img>` are `expansion` pieces.
- The template has no tools, tool calls or reasoning: `tools`, `tool_calls` and `reasoning_content` would be
  dropped silently and are refused; a tool message would be printed as a `tool` turn the model never saw, and is
  refused too. Content with `<think>` in it is printed (and trained) verbatim.
- The generation prompt is `<|im_start|>assistant\\n`; a completion ends with `<|im_end|>` (or `<|endoftext|>`).
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.base import FamilyAdapter, refuse
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.families.pieces import ImageSlot, Token
from foveal.renderers.messages import AssistantMessage, Content, ImagePart, Message, ToolSpec

IMG_START, IMG_END, IMG_CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
_ROLES = ("system", "user", "assistant")


class InternVLFamily(FamilyAdapter):
    name = "internvl"
    layout_family = "internvl"
    image_token = IMG_CONTEXT
    vision_markers = (IMG_START, IMG_END)
    reserved_tokens = (IMG_CONTEXT, IMG_START, IMG_END, VIDEO)
    completion = CompletionFormat(reasoning=False, tool_calls=False)
    prefix_stable = True
    prefix_note = (
        "Each message is written on its own, in order, with no default system turn, so a longer conversation "
        "starts with the text of a shorter one. Re-tokenizing sampled text can still differ from the sampled ids; "
        "`bridge` keeps them."
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
                why = "no reasoning field: put any <think> text in the content"
                raise refuse(f"messages[{index}].reasoning_content", message.reasoning_content, self.name, why)

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        for index, message in enumerate(messages):
            trained = message.role == "assistant"
            out.open_turn(message.role, index)
            _content(out, message.content, index, trained)
            out.close_turn(index, trained)
        if add_generation_prompt:
            out.generation_prompt(len(messages))
        return out


def _content(out: ChatWriter, content: Content, message: int, trained: bool) -> None:
    """Text as is; an image as the processor's `<img>` run `</img>`, then the template's own newline."""
    if isinstance(content, str):
        out.text(content, message, trained)
        return
    for part in content:
        if isinstance(part, ImagePart):
            out.pieces.append(Token(IMG_START, message, expansion=True))
            out.pieces.append(ImageSlot(len(out.images), message))
            out.pieces.append(Token(IMG_END, message, expansion=True))
            out.images.append(part)
            out.text("\n", message, trained)
        else:
            out.text(part.text, message, trained)
