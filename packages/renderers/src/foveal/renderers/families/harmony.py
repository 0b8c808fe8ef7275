"""Sampled harmony text (gpt-oss) -> AssistantMessage: channels back into reasoning, content and tool calls.

A gpt-oss reply continues the generation prompt `<|start|>assistant` with one or more messages, each
`{header}<|message|>{body}` closed by `<|end|>` (and the next one opened by `<|start|>assistant`), the last by
`<|return|>` (an answer) or `<|call|>` (a tool call), which the renderer has already cut off. The header names
the channel and, for a tool call, the recipient, in either of the two spellings that occur:
- the chat template's: ` to=functions.NAME<|channel|>commentary json`;
- the model's own (harmony): `<|channel|>commentary to=functions.NAME <|constrain|>json`.
The analysis channel is reasoning, final is content, a commentary message to a recipient is a tool call whose body
is JSON arguments, and a commentary message without one (a preamble to the user) is content. Parsing is tolerant:
a reply with no `<|message|>` at all is content verbatim, and a call body that is not JSON stays content with a
`ToolCallError`, never an exception.
"""

from __future__ import annotations

import json
import re

from foveal.renderers.messages import AssistantMessage, ToolCall, ToolCallError

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*([^\s<]+)")
FUNCTIONS = "functions."


def parse_harmony(text: str) -> AssistantMessage:
    """Split a sampled gpt-oss reply (after `<|start|>assistant`, before its stop token) by channel."""
    if MESSAGE not in text:
        return AssistantMessage(content=text)
    reasoning: list[str] = []
    content: list[str] = []
    calls: list[ToolCall] = []
    errors: list[ToolCallError] = []
    for index, chunk in enumerate(text.split(START)):
        header, opened, body = chunk.partition(MESSAGE)
        if not opened:
            continue  # cut off inside a header (or nothing after a closed message): no body to read
        header = header.removeprefix("assistant") if index else header
        body = body.removesuffix(END).removesuffix(RETURN).removesuffix(CALL)
        channel_match = _CHANNEL.search(header)
        channel = channel_match.group(1) if channel_match else ""
        recipient = _RECIPIENT.search(header.replace(CHANNEL, " ").replace(CONSTRAIN, " "))
        if recipient is not None:
            call, error = _read_call(recipient.group(1), body)
            if call is not None:
                calls.append(call)
            else:
                content.append(body)
                errors.append(ToolCallError(raw=body, error=error))
        elif channel == "analysis":
            reasoning.append(body)
        else:
            content.append(body)  # final, or a commentary preamble
    return AssistantMessage(
        content="".join(content),
        reasoning_content="\n".join(reasoning) if reasoning else None,
        tool_calls=tuple(calls),
        tool_call_errors=tuple(errors),
    )


def _read_call(recipient: str, body: str) -> tuple[ToolCall | None, str]:
    """A call to `functions.NAME` (or another recipient, named whole) with JSON arguments."""
    name = recipient.removeprefix(FUNCTIONS)
    try:
        arguments = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON arguments for {recipient}: {err.msg} at char {err.pos}"
    if not isinstance(arguments, dict | str):
        return None, f"arguments for {recipient} must be a JSON object"
    return ToolCall(name=name, arguments=arguments), ""
