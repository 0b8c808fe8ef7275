"""Streamed text, piece by piece: only what no later token can change is sent, so the deltas of a stream
add up to exactly the text of the same completion answered whole.

Three things can still change at the end of a growing completion: an incomplete UTF-8 character (a token
may carry half of its bytes), a stop string that has begun to appear (text completions cut it off), and a
structure the family's parser reads (a `<tool_call>` block, a `<think>` section, a Llama JSON call). The
decoder waits out the first; `completion_text` and `partial_reply` hold back the others until they are
settled or the completion has ended (its final parse then sends the rest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foveal.renderers.families.completion import (
    CALL_OPEN,
    JSON_CALL_START,
    PYTHON_TAG,
    THINK_CLOSE,
    CompletionFormat,
    parse_assistant_text,
)

Decode = Callable[[list[int]], str]


@dataclass
class IncrementalDecoder:
    """The text of growing token ids, decoding only the newest tokens each time; a token that ends inside a
    character adds nothing until the tokens completing it arrive."""

    decode: Decode
    ids: list[int] = field(default_factory=list)
    text: str = ""
    _start: int = 0
    """First id of the window still decoded again: the ids before it are in `text` for good."""
    _read: int = 0
    """Ids up to here are in `text`."""

    def push(self, token_id: int) -> str:
        """Add one token; returns the text it settled (maybe empty)."""
        self.ids.append(token_id)
        settled = self.decode(self.ids[self._start : self._read])
        window = self.decode(self.ids[self._start :])
        if len(window) <= len(settled) or window.endswith("\ufffd"):
            return ""
        new = window[len(settled) :]
        self.text += new
        self._start, self._read = self._read, len(self.ids)
        return new


@dataclass
class SentText:
    """What one field of a stream has sent so far."""

    sent: str = ""

    def advance(self, value: str | None) -> str:
        """The part of `value` past what was sent; nothing when it does not extend it (sent text stays sent)."""
        if value is None or len(value) <= len(self.sent) or not value.startswith(self.sent):
            return ""
        delta, self.sent = value[len(self.sent) :], value
        return delta


def completion_text(text: str, stops: Sequence[str]) -> str:
    """A text completion as OpenAI returns it: cut before the first stop string."""
    cut = min((found for stop in stops if (found := text.find(stop)) >= 0), default=len(text))
    return text[:cut]


def settled_completion_text(text: str, stops: Sequence[str]) -> str:
    """`completion_text` of an unfinished completion, less an end that may grow into a stop string."""
    cut = completion_text(text, stops)
    return cut[: len(cut) - _partial_marker(cut, stops)]


def partial_reply(text: str, fmt: CompletionFormat) -> tuple[str | None, str | None]:
    """(reasoning, content) of an unfinished assistant reply, each as far as later tokens cannot change it
    (None: nothing settled yet). Reasoning comes whole, once `</think>` has closed it; content stops
    growing at the first `<tool_call>` (the calls, and any content after them, come with the final parse)."""
    if fmt.reasoning and THINK_CLOSE not in text:
        return None, None
    if fmt.tool_calls and fmt.tool_call_style == "json" and _may_become_json_call(text):
        return None, None
    message = parse_assistant_text(text, fmt)
    if message.tool_calls or message.tool_call_errors:
        return message.reasoning_content, None
    content = message.text()
    if fmt.tool_calls and fmt.tool_call_style == "tagged":
        content = content[: len(content) - _partial_marker(content, (CALL_OPEN,))].rstrip("\n")
    return message.reasoning_content, content


def _may_become_json_call(text: str) -> bool:
    """Whether a Llama-style reply could still turn out to be one bare JSON tool call (then it has no content)."""
    stripped = text.strip()
    body = stripped.removeprefix(PYTHON_TAG).lstrip()
    return PYTHON_TAG.startswith(stripped) or body.startswith(JSON_CALL_START) or JSON_CALL_START.startswith(body)


def _partial_marker(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the start (not the whole) of one of `markers`."""
    longest = max((len(marker) for marker in markers), default=0)
    for size in range(min(longest - 1, len(text)), 0, -1):
        if any(marker.startswith(text[-size:]) for marker in markers if len(marker) > size):
            return size
    return 0
