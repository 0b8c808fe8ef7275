"""Qwen3 (text): ChatML with a tools preamble, `<think>` reasoning blocks and grouped tool responses.

What makes it different, all mirrored from its template:
- Only assistant turns after the last real user query (a user message that is not a tool response)
  show reasoning, as `<think>\\n{reasoning}\\n</think>\\n\\n{content}`; the final assistant turn always
  gets the block, even an empty one. Earlier turns lose their reasoning, so when a new user query
  arrives the previous turns are rewritten: the template is not prefix-stable.
- Reasoning may also sit inside `content` as `<think>...</think>`; the template splits it out.
- Consecutive tool messages share one `<|im_start|>user` turn of `<tool_response>` blocks.
- Content must be text: the template prints list content as nothing, so text parts are joined and
  images are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foveal.renderers.families.base import TextFamilyAdapter, refuse_images
from foveal.renderers.families.chatml import ChatWriter, tool_calls_text
from foveal.renderers.families.completion import THINK_CLOSE, THINK_OPEN, CompletionFormat
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec, UserMessage


class Qwen3Family(TextFamilyAdapter):
    name = "qwen3"
    layout_family = None
    completion = CompletionFormat(reasoning=True, tool_calls=True)
    prefix_stable = False
    prefix_note = (
        "Reasoning of assistant turns before the last user query is dropped, and the last assistant turn "
        "always gets a <think> block: rendering a longer conversation rewrites earlier turns. Use "
        "`Renderer.bridge` to extend a conversation while keeping the sampled tokens."
    )

    def __init__(self, enable_thinking: bool | None = None) -> None:
        self.enable_thinking = enable_thinking

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        refuse_images(messages, self.name, frozenset(), "text only")

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.system_turn(messages[0].text() if messages and messages[0].role == "system" else None, tools)
        last_query = _last_query_index(messages)
        for index, message in enumerate(messages):
            if isinstance(message, AssistantMessage):
                _write_assistant(out, messages, index, last_query)
            elif message.role == "tool":
                out.tool_response(messages, index, media=False)
            elif message.role == "user" or index > 0:
                out.open_turn(message.role, index)
                out.text(message.text(), index, content=True)
                out.close_turn(index)
        if add_generation_prompt:
            out.generation_prompt(len(messages))
            if self.enable_thinking is False:
                out.text(f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n", len(messages))
        return out


def _last_query_index(messages: Sequence[Message]) -> int:
    """Index of the last user message that is a real query (not a `<tool_response>` echo)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, UserMessage):
            text = message.text()
            if not (text.startswith("<tool_response>") and text.endswith("</tool_response>")):
                return index
    return len(messages) - 1


def _write_assistant(out: ChatWriter, messages: Sequence[Message], index: int, last_query: int) -> None:
    message = messages[index]
    assert isinstance(message, AssistantMessage)
    content, reasoning = split_reasoning(message)
    is_last = index == len(messages) - 1
    out.open_turn("assistant", index)
    if index > last_query and (is_last or reasoning):
        body = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{content.lstrip(chr(10))}"
    else:
        body = content
    out.text(body + tool_calls_text(message.tool_calls, bool(content)), index, trained=True, content=True)
    out.close_turn(index, trained=True)


def split_reasoning(message: AssistantMessage) -> tuple[str, str]:
    """(content, reasoning) as the template computes them, including `<think>` embedded in content."""
    content = message.text()
    if message.reasoning_content is not None:
        return content, message.reasoning_content
    if THINK_CLOSE in content:
        reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
        return content.split(THINK_CLOSE)[-1].lstrip("\n"), reasoning
    return content, ""
