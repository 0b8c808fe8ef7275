"""Qwen3-VL (Instruct): Qwen3's tools and tool grouping, Qwen2-VL's inline images, no reasoning.

The template writes no default system turn; only a leading system message is kept (its text, in the
tools preamble when tools are offered). Images render in user and tool turns only: system and assistant
turns print their text parts, later system messages and `reasoning_content` are not printed at all, so
all of those are refused here rather than silently lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.base import FamilyAdapter, refuse, refuse_images
from foveal.renderers.families.chatml import VISION_END, VISION_START, ChatWriter, tool_calls_text
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec

_IMAGE_ROLES = frozenset({"user", "tool"})


class Qwen3VLFamily(FamilyAdapter):
    name = "qwen3_vl"
    layout_family = "qwen3_vl"
    vision_markers = (VISION_START, VISION_END)
    completion = CompletionFormat(reasoning=False, tool_calls=True)
    prefix_stable = False
    prefix_note = (
        "Earlier turns are never rewritten, with one exception: consecutive tool messages share one user "
        "turn, so appending a tool message after a tool message reopens the previous turn (its "
        "`<|im_end|>` moves). Appending after an assistant turn, the RL case, is exact with `bridge`, "
        "which keeps the sampled ids (re-tokenizing sampled text can differ from them)."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        refuse_images(messages, self.name, _IMAGE_ROLES)
        for index, message in enumerate(messages):
            if message.role == "system" and index > 0:
                raise refuse(f"messages[{index}].role", "system", self.name, "only a leading system message")
            if isinstance(message, AssistantMessage) and message.reasoning_content is not None:
                raise refuse(
                    f"messages[{index}].reasoning_content", message.reasoning_content, self.name, "no reasoning"
                )

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.system_turn(messages[0].text() if messages and messages[0].role == "system" else None, tools)
        for index, message in enumerate(messages):
            if message.role == "user":
                out.open_turn("user", index)
                out.content(message.content, index)
                out.close_turn(index)
            elif isinstance(message, AssistantMessage):
                out.open_turn("assistant", index)
                calls = tool_calls_text(message.tool_calls, bool(message.content))
                out.text(message.text() + calls, index, trained=True, content=True)
                out.close_turn(index, trained=True)
            elif message.role == "tool":
                out.tool_response(messages, index, media=True)
        if add_generation_prompt:
            out.generation_prompt(len(messages))
        return out
