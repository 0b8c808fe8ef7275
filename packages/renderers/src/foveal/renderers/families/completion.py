"""Sampled text -> AssistantMessage for ChatML families, inverting what their templates write.

The templates write an assistant turn as `[<think>\\n{reasoning}\\n</think>\\n\\n]{content}` followed by
`\\n<tool_call>\\n{json}\\n</tool_call>` blocks (the first `\\n` only when content is non-empty). Parsing is
tolerant because completions are sampled: a missing `</think>` means the budget ran out mid-reasoning, a
block that is not valid JSON stays in `content` verbatim with a `ToolCallError`, never an exception,
so an RL loop can score the turn instead of crashing on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from foveal.renderers.messages import AssistantMessage, ToolCall, ToolCallError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CompletionFormat:
    """Which structures a family's template writes into assistant turns."""

    reasoning: bool
    tool_calls: bool


def parse_assistant_text(text: str, fmt: CompletionFormat) -> AssistantMessage:
    """Split sampled text into reasoning, content and tool calls the way the family's template joins them."""
    reasoning, rest = _split_reasoning(text) if fmt.reasoning else (None, text)
    if not fmt.tool_calls or CALL_OPEN not in rest:
        return AssistantMessage(content=rest, reasoning_content=reasoning)
    head, _, _ = rest.partition(CALL_OPEN)
    content, calls, errors = _parse_calls(rest[len(head) :])
    head = head[:-1] if head.endswith("\n") else head  # the separator the template puts before a call
    return AssistantMessage(
        content=head + content, reasoning_content=reasoning, tool_calls=tuple(calls), tool_call_errors=tuple(errors)
    )


def _split_reasoning(text: str) -> tuple[str | None, str]:
    """`<think>\\nR\\n</think>\\n\\nC` -> (R, C); with no `</think>` everything after `<think>` is reasoning."""
    if THINK_CLOSE in text:
        before, _, after = text.partition(THINK_CLOSE)
        return before.split(THINK_OPEN)[-1].strip("\n"), after.lstrip("\n")
    if text.lstrip("\n").startswith(THINK_OPEN):
        return text.split(THINK_OPEN, 1)[1].strip("\n"), ""
    return None, text


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
