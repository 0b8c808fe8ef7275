"""Qwen3-VL Thinking: the Instruct template's turns, tools and images, plus Qwen3's reasoning rules.

What differs from `qwen3_vl` (Instruct), all mirrored from the Thinking models' published template:
- The generation prompt is `<|im_start|>assistant\\n<think>\\n`: the prompt opens the reasoning block, so a
  sampled reply holds only the rest of the reasoning, `</think>`, then the answer. Parsing knows this: a reply
  without `</think>` is all reasoning (the budget ran out inside the block).
- Assistant turns follow Qwen3's rules: the "last query" is the last user message whose rendered content is not
  only a `<tool_response>...</tool_response>` echo; assistant turns after it write
  `<think>\\n{reasoning}\\n</think>\\n\\n{content}` when they are the last message or have reasoning (the last one
  always, even empty), earlier turns drop their reasoning. `reasoning_content` wins; otherwise a `...</think>`
  prefix of the content is split off as the reasoning. So the template is not prefix-stable.
- Everything else (leading system message only, tools preamble, images in user and tool turns, grouped tool
  responses, text-only assistant turns) is the Instruct template's.
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.base import refuse, refuse_images
from foveal.renderers.families.chatml import IMAGE_PAD, VISION_END, VISION_START, ChatWriter, tool_calls_text
from foveal.renderers.families.completion import THINK_CLOSE, THINK_OPEN, CompletionFormat
from foveal.renderers.families.qwen3 import split_reasoning
from foveal.renderers.families.qwen3_vl import Qwen3VLFamily
from foveal.renderers.messages import AssistantMessage, ImagePart, Message, ToolSpec, UserMessage

_IMAGE_ROLES = frozenset({"user", "tool"})
GENERATION_THINK = f"{THINK_OPEN}\n"
"""What the Thinking template writes after `<|im_start|>assistant\\n` in the generation prompt."""


class Qwen3VLThinkingFamily(Qwen3VLFamily):
    name = "qwen3_vl_thinking"
    completion = CompletionFormat(reasoning=True, tool_calls=True, reasoning_opened=True)
    prefix_stable = False
    prefix_note = (
        "Reasoning of assistant turns before the last user query is dropped, the last assistant turn always gets "
        "a <think> block, and consecutive tool messages share one user turn: rendering a longer conversation "
        "rewrites earlier turns. `Renderer.bridge` extends a conversation keeping the sampled tokens."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        refuse_images(messages, self.name, _IMAGE_ROLES)
        for index, message in enumerate(messages):
            if message.role == "system" and index > 0:
                raise refuse(f"messages[{index}].role", "system", self.name, "only a leading system message")

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.system_turn(messages[0].text() if messages and messages[0].role == "system" else None, tools)
        last_query = _last_query_index(messages)
        for index, message in enumerate(messages):
            if message.role == "user":
                out.open_turn("user", index)
                out.content(message.content, index)
                out.close_turn(index)
            elif isinstance(message, AssistantMessage):
                _write_assistant(out, messages, index, last_query)
            elif message.role == "tool":
                out.tool_response(messages, index, media=True)
        if add_generation_prompt:
            out.generation_prompt(len(messages))
            out.text(GENERATION_THINK, len(messages))
        return out


def _rendered_content(message: Message) -> str:
    """A user message's content as the template renders it (images as their vision block)."""
    if isinstance(message.content, str):
        return message.content
    return "".join(
        VISION_START + IMAGE_PAD + VISION_END if isinstance(part, ImagePart) else part.text for part in message.content
    )


def _last_query_index(messages: Sequence[Message]) -> int:
    """Index of the last user message that is a real query (not only a `<tool_response>` echo)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, UserMessage):
            text = _rendered_content(message)
            if not (text.startswith("<tool_response>") and text.endswith("</tool_response>")):
                return index
    return len(messages) - 1


def _write_assistant(out: ChatWriter, messages: Sequence[Message], index: int, last_query: int) -> None:
    message = messages[index]
    assert isinstance(message, AssistantMessage)
    content, reasoning = split_reasoning(message)
    out.open_turn("assistant", index)
    if index > last_query and (index == len(messages) - 1 or reasoning):
        body = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{content.lstrip(chr(10))}"
    else:
        body = content
    out.text(body + tool_calls_text(message.tool_calls, bool(content)), index, trained=True, content=True)
    out.close_turn(index, trained=True)
