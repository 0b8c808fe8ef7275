"""Qwen2-VL and Qwen2.5-VL: plain ChatML with a default system turn and inline vision blocks.

The template writes a default `You are a helpful assistant.` system turn when the first message is not a
system message, then every message as `<|im_start|>{role}\\n{content}<|im_end|>\\n` with images as
`<|vision_start|><|image_pad|><|vision_end|>` wherever they sit (any role). It has no tools and no
reasoning: it drops `tools`, `tool_calls` and `reasoning_content` silently, so those are refused here.
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.families.base import FamilyAdapter, refuse
from foveal.renderers.families.chatml import VISION_END, VISION_START, ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec

DEFAULT_SYSTEM = "You are a helpful assistant."


class Qwen2VLFamily(FamilyAdapter):
    name = "qwen2_vl"
    layout_family = "qwen2_vl"
    vision_markers = (VISION_START, VISION_END)
    completion = CompletionFormat(reasoning=False, tool_calls=False)
    prefix_stable = True
    prefix_note = (
        "Each message is written on its own, in order, so a longer conversation starts with the text of a "
        "shorter one. Re-tokenizing sampled text can still differ from the sampled ids; `bridge` keeps them."
    )

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        if tools:
            raise refuse("tools", [t.function.name for t in tools], self.name, "it has no tool section")
        for index, message in enumerate(messages):
            if isinstance(message, AssistantMessage) and message.tool_calls:
                raise refuse(f"messages[{index}].tool_calls", message.tool_calls, self.name, "no tool calls")
            if isinstance(message, AssistantMessage) and message.reasoning_content is not None:
                raise refuse(
                    f"messages[{index}].reasoning_content", message.reasoning_content, self.name, "no reasoning"
                )

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        if not messages or messages[0].role != "system":
            out.open_turn("system", -1)  # the template's own system turn: no message wrote it
            out.text(DEFAULT_SYSTEM, -1)
            out.close_turn(-1)
        for index, message in enumerate(messages):
            trained = message.role == "assistant"
            out.open_turn(message.role, index)
            out.content(message.content, index, trained)
            out.close_turn(index, trained)
        if add_generation_prompt:
            out.generation_prompt(len(messages))
        return out
