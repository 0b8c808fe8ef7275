"""Llama 3.1 / 3.2 Instruct (text): header-framed turns, a system turn the template always writes, JSON tool calls.

What makes it different, all mirrored from its template:
- The template writes `<|begin_of_text|>` itself (as an added token, written here by id; the tokenizer's own
  BOS post-processor is never applied, so there is exactly one), then a system turn that is always there:
  the knowledge cutoff and `date_string`, then the leading system message, trimmed. Without a system message
  that turn belongs to no message (-1).
- Every turn is `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content trimmed}<|eot_id|>`, with nothing
  between turns. Trimming drops leading and trailing whitespace of every message but tool results.
- With tools, the system turn starts with `Environment: ipython\\n` and the tool list (JSON, indent 4) goes
  in front of the first message after the system one, printed as a user turn whatever its role; so that
  message must be a user message (anything else would be relabelled, a tool call dropped).
- An assistant turn with a tool call prints only `{"name": ..., "parameters": ...}`: its content is dropped
  and more than one call makes the template raise, so both are refused. Tool results are `ipython` turns
  whose text is written with `tojson` (quoted), untrimmed.
- Content must be text; images and `reasoning_content` are never printed, so they are refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from foveal.renderers.families.base import TextFamilyAdapter, refuse, refuse_images
from foveal.renderers.families.chatml import ChatWriter
from foveal.renderers.families.completion import CompletionFormat
from foveal.renderers.messages import AssistantMessage, Message, ToolCall, ToolSpec

BEGIN_OF_TEXT, END_OF_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
EOT, EOM = "<|eot_id|>", "<|eom_id|>"
DEFAULT_DATE = "26 Jul 2024"
KNOWLEDGE_CUTOFF = "Cutting Knowledge Date: December 2023\n"
TOOLS_ENVIRONMENT = "Environment: ipython\n"
USER_TOOLS_INTRO = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
)
TOOLS_FORMAT = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


class Llama3Family(TextFamilyAdapter):
    name = "llama3"
    layout_family = None
    completion = CompletionFormat(reasoning=False, tool_calls=True, tool_call_style="json")
    prefix_stable = True
    prefix_note = (
        "Each turn is written on its own and never rewritten, so a longer conversation starts with the text of a "
        "shorter one, for the same tools and date: the template's own system turn (knowledge cutoff, date) comes "
        "first whatever follows, and with tools the tool list sits in the first user message, so offering other "
        "tools rewrites that message. Content is trimmed, so re-rendering sampled text can differ from the "
        "sampled ids; `bridge` keeps them."
    )
    image_token = ""
    stop_tokens = (EOT, EOM, END_OF_TEXT)
    reserved_tokens = ()

    def __init__(self, date_string: str | None = None) -> None:
        """`date_string` is the template variable of the same name (None: the template's "26 Jul 2024")."""
        self.date_string = date_string

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> None:
        refuse_images(messages, self.name, frozenset(), "text only")
        for index, message in enumerate(messages):
            if not isinstance(message, AssistantMessage):
                continue
            if message.reasoning_content is not None:
                reasoning = message.reasoning_content
                raise refuse(f"messages[{index}].reasoning_content", reasoning, self.name, "no reasoning")
            if len(message.tool_calls) > 1:
                raise refuse(
                    f"messages[{index}].tool_calls", message.tool_calls, self.name, "one tool call per assistant turn"
                )
            if message.tool_calls and message.text().strip():
                raise refuse(
                    f"messages[{index}].content", message.text(), self.name, "a tool-call turn prints only the call"
                )
        if tools:
            first = _first_turn(messages)
            if first == len(messages):
                raise refuse("messages", "<no message after the system one>", self.name, "tools in the first user turn")
            if messages[first].role != "user":
                raise refuse(
                    f"messages[{first}].role", messages[first].role, self.name, "with tools, a user message first"
                )

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.date_string is None else {"date_string": self.date_string}

    def write(self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> ChatWriter:
        out = ChatWriter()
        out.token(BEGIN_OF_TEXT, -1)  # the template's own, whatever the messages
        first = _first_turn(messages)
        owner = 0 if first == 1 else -1
        _open_turn(out, "system", owner)
        head = (TOOLS_ENVIRONMENT if tools else "") + KNOWLEDGE_CUTOFF + f"Today Date: {self.date}\n\n"
        out.text(head, owner)
        if owner == 0:
            out.text(messages[0].text().strip(), owner, content=True)
        out.token(EOT, owner)
        for index in range(first, len(messages)):
            message = messages[index]
            if index == first and tools:
                _open_turn(out, "user", index)
                out.text(USER_TOOLS_INTRO + TOOLS_FORMAT + _tool_list(tools), index)
                out.text(message.text().strip(), index, content=True)
                out.token(EOT, index)
            elif isinstance(message, AssistantMessage) and message.tool_calls:
                _open_turn(out, "assistant", index)
                out.text(call_text(message.tool_calls[0]), index, trained=True, content=True)
                out.token(EOT, index, trained=True)
            elif message.role == "tool":
                _open_turn(out, "ipython", index)
                out.text(json.dumps(message.text(), ensure_ascii=False), index, content=True)
                out.token(EOT, index)
            else:
                trained = message.role == "assistant"
                _open_turn(out, message.role, index)
                out.text(message.text().strip(), index, trained, content=True)
                out.token(EOT, index, trained)
        if add_generation_prompt:
            _open_turn(out, "assistant", len(messages))
        return out

    @property
    def date(self) -> str:
        return DEFAULT_DATE if self.date_string is None else self.date_string


def _first_turn(messages: Sequence[Message]) -> int:
    """Index of the first message after the leading system message (which the system turn prints)."""
    return 1 if messages and messages[0].role == "system" else 0


def _open_turn(out: ChatWriter, role: str, message: int) -> None:
    """`<|start_header_id|>{role}<|end_header_id|>\\n\\n`: never trained, the prompt the model continues from."""
    out.token(START_HEADER, message)
    out.text(role, message)
    out.token(END_HEADER, message)
    out.text("\n\n", message)


def _tool_list(tools: Sequence[ToolSpec]) -> str:
    """Each tool as `tojson(indent=4)` writes it, then a blank line."""
    return "".join(json.dumps(tool.template_dict(), ensure_ascii=False, indent=4) + "\n\n" for tool in tools)


def call_text(call: ToolCall) -> str:
    """`{"name": "...", "parameters": ...}` with the arguments through `tojson` (a string argument gets quoted)."""
    return f'{{"name": "{call.name}", "parameters": {json.dumps(call.arguments, ensure_ascii=False)}}}'
