"""Sampled text -> AssistantMessage, inverting what each family's template writes into an assistant turn.

The ChatML templates write an assistant turn as `[<think>\\n{reasoning}\\n</think>\\n\\n]{content}` followed by
`\\n<tool_call>\\n{json}\\n</tool_call>` blocks (the first `\\n` only when content is non-empty). Llama 3.1
writes a tool call as the whole turn instead: one bare `{"name": ..., "parameters": {...}}` object, no
tags, no content beside it. Parsing is tolerant because completions are sampled: a missing `</think>`
means the budget ran out mid-reasoning, a block that is not valid JSON stays in `content` verbatim with a
`ToolCallError`, never an exception, so an RL loop can score the turn instead of crashing on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from foveal.renderers.families.harmony import parse_harmony
from foveal.renderers.messages import AssistantMessage, ToolCall, ToolCallError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CompletionFormat:
    """Which structures a family's template writes into assistant turns."""

    reasoning: bool
    tool_calls: bool
    tool_call_style: Literal["tagged", "json", "harmony"] = "tagged"
    """"tagged": `<tool_call>` blocks after the content (Qwen); "json": the turn is one bare JSON call (Llama 3.1);
    "harmony": channel messages, calls on the commentary channel to `functions.NAME` (gpt-oss, `harmony.py`)."""
    reasoning_split: Literal["newlines", "verbatim"] = "newlines"
    """"newlines": Qwen's `<think>\\nR\\n</think>\\n\\n` (newlines around the block dropped); "verbatim": a turn that
    starts with `<think>` splits into exactly the text inside the block and the text after it (GLM-4.1V)."""
    lead: str = ""
    """What the generation prompt leaves for the model to write before the content (SmolVLM2's prompt ends in
    "Assistant:" while a rendered turn starts "Assistant: "): removed from a completion before it is parsed."""
    reasoning_opened: bool = False
    """The generation prompt opens `<think>` (Qwen3-VL Thinking): a reply starts inside the block, so one without
    `</think>` is all reasoning (cut off), and one with it splits there."""


JSON_CALL_START = '{"name"'
"""How the Llama 3.1 template starts a tool-call turn: a reply starting so is read as a call (or flagged)."""
PYTHON_TAG = "<|python_tag|>"


def parse_assistant_text(text: str, fmt: CompletionFormat) -> AssistantMessage:
    """Split sampled text into reasoning, content and tool calls the way the family's template joins them."""
    text = text.removeprefix(fmt.lead)
    if fmt.tool_calls and fmt.tool_call_style == "harmony":
        return parse_harmony(text)
    if fmt.tool_calls and fmt.tool_call_style == "json":
        return _parse_json_call(text)
    split = _split_verbatim if fmt.reasoning_split == "verbatim" else _split_reasoning
    if fmt.reasoning and fmt.reasoning_opened and THINK_CLOSE not in text:
        reasoning, rest = text.removeprefix(THINK_OPEN).strip("\n"), ""  # cut off inside the opened block
    else:
        reasoning, rest = split(text) if fmt.reasoning else (None, text)
    if not fmt.tool_calls or CALL_OPEN not in rest:
        return AssistantMessage(content=rest, reasoning_content=reasoning)
    head, _, _ = rest.partition(CALL_OPEN)
    content, calls, errors = _parse_calls(rest[len(head) :])
    head = head[:-1] if head.endswith("\n") else head  # the separator the template puts before a call
    return AssistantMessage(
        content=head + content, reasoning_content=reasoning, tool_calls=tuple(calls), tool_call_errors=tuple(errors)
    )


def _parse_json_call(text: str) -> AssistantMessage:
    """A reply that is one `{"name": ..., "parameters": {...}}` object (surrounding whitespace and a leading
    `<|python_tag|>` allowed) is a tool call with no content; one that starts like a call but does not parse
    stays content with a `ToolCallError`; anything else is content, verbatim."""
    body = text.strip().removeprefix(PYTHON_TAG).lstrip()
    if not body.startswith(JSON_CALL_START):
        return AssistantMessage(content=text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        return _not_a_call(text, f"invalid JSON: {err.msg} at char {err.pos}")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return _not_a_call(text, 'expected a JSON object with a string "name"')
    parameters = data.get("parameters")
    if not isinstance(parameters, dict):
        return _not_a_call(text, '"parameters" must be a JSON object')  # missing too: never guessed as {}
    return AssistantMessage(content="", tool_calls=(ToolCall(name=data["name"], arguments=parameters),))


def _not_a_call(text: str, error: str) -> AssistantMessage:
    return AssistantMessage(content=text, tool_call_errors=(ToolCallError(raw=text, error=error),))


def _split_reasoning(text: str) -> tuple[str | None, str]:
    """`<think>\\nR\\n</think>\\n\\nC` -> (R, C); with no `</think>` everything after `<think>` is reasoning."""
    if THINK_CLOSE in text:
        before, _, after = text.partition(THINK_CLOSE)
        return before.split(THINK_OPEN)[-1].strip("\n"), after.lstrip("\n")
    if text.lstrip("\n").startswith(THINK_OPEN):
        return text.split(THINK_OPEN, 1)[1].strip("\n"), ""
    return None, text


def _split_verbatim(text: str) -> tuple[str | None, str]:
    """`<think>R</think>C` -> (R, C) exactly; an unclosed `<think>R` -> (R, ""); text not starting so: no reasoning."""
    if not text.startswith(THINK_OPEN):
        return None, text
    reasoning, closed, after = text[len(THINK_OPEN) :].partition(THINK_CLOSE)
    return reasoning, after if closed else ""


def _parse_calls(region: str) -> tuple[str, list[ToolCall], list[ToolCallError]]:
    """Parse the `<tool_call>` blocks of `region`; text that is not a valid call is returned as content."""
    leftover, calls, errors, position = [], [], [], 0
    for match in _CALL.finditer(region):
        leftover.append(_between(region[position : match.start()]))
        position = match.end()
        call, error = _read_call(match.group(1), closed=match.group(0).endswith(CALL_CLOSE))
        if call is not None:
            calls.append(call)
        else:
            leftover.append(match.group(0))
            errors.append(ToolCallError(raw=match.group(0), error=error))
    leftover.append(region[position:])
    return "".join(leftover), calls, errors


def _between(gap: str) -> str:
    """The template separates consecutive calls by one `\\n`; anything else between them is content."""
    return "" if gap in ("", "\n") else gap


def _read_call(body: str, closed: bool) -> tuple[ToolCall | None, str]:
    if not closed:
        return None, "unterminated <tool_call> (completion ended inside it)"
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg} at char {err.pos}"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None, 'expected a JSON object with a string "name"'
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        return None, '"arguments" must be a JSON object'
    return ToolCall(name=data["name"], arguments=arguments), ""
