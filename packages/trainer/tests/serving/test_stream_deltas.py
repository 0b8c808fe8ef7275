"""Streamed deltas add up to the text answered whole, however the completion is split into tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.families.completion import CompletionFormat, parse_assistant_text
from foveal.renderers.factory import load_renderer
from foveal.renderers.tiny import build_tiny_processor
from foveal.trainer.serving.app.deltas import (
    IncrementalDecoder,
    SentText,
    completion_text,
    partial_reply,
    settled_completion_text,
)

FORMATS = [
    CompletionFormat(reasoning=False, tool_calls=False),
    CompletionFormat(reasoning=False, tool_calls=True),
    CompletionFormat(reasoning=True, tool_calls=True),
    CompletionFormat(reasoning=False, tool_calls=True, tool_call_style="json"),
]
PIECES = [
    "a", "b", " ", "\n", "é", "<", "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_", "<|python_tag|>",
    '{"name": "f", "arguments": {}}', '{"name": "f", "parameters": {"x": 1}}', '{"na', "}", "STOP", "ST",
]  # fmt: skip


def split(text: str, cuts: list[int]) -> list[str]:
    """`text` as the growing prefixes a stream sees, ending with the whole text."""
    points = sorted({cut % (len(text) + 1) for cut in cuts} | {len(text)})
    return [text[:point] for point in points]


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30),
)
def test_chat_deltas_add_up_to_the_final_parse(fmt: CompletionFormat, pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    reasoning, content = SentText(), SentText()
    for prefix in split(text, cuts)[:-1]:
        partial_reasoning, partial_content = partial_reply(prefix, fmt)
        reasoning.advance(partial_reasoning)
        content.advance(partial_content)
    final = parse_assistant_text(text, fmt)
    reasoning.advance(final.reasoning_content)
    content.advance(final.text())
    assert (reasoning.sent or None, content.sent) == (final.reasoning_content or None, final.text())


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30),
    stops=st.lists(st.sampled_from(["STOP", "\n\n", "b<"]), max_size=2),
)
def test_completion_deltas_add_up_to_the_text_cut_at_the_first_stop(
    pieces: list[str], cuts: list[int], stops: list[str]
) -> None:
    text = "".join(pieces)
    sent = SentText()
    streamed = "".join(sent.advance(settled_completion_text(prefix, stops)) for prefix in split(text, cuts)[:-1])
    streamed += sent.advance(completion_text(text, stops))
    assert streamed == completion_text(text, stops)


@pytest.fixture(scope="module")
def tokenizer(tiny_cache_root: Path):  # noqa: ANN201 - a transformers tokenizer
    return load_renderer(build_tiny_processor("qwen2_5_vl", tiny_cache_root)).tokenizer


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("aé€😀 \n<>漢字")), min_size=1, max_size=40))
def test_the_incremental_decoder_never_splits_a_character(tokenizer, text: str) -> None:  # noqa: ANN001
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(lambda window: tokenizer.decode(window, skip_special_tokens=False))
    pieces = [decoder.push(token) for token in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == decoder.text == text


@pytest.mark.parametrize(
    ("fmt", "prefix", "settled"),
    [
        (FORMATS[0], "Hello <tool", (None, "Hello <tool")),
        (FORMATS[1], "Hello\n<tool", (None, "Hello")),
        (FORMATS[1], 'Hi\n<tool_call>\n{"name"', (None, None)),
        (FORMATS[2], "<think>\nhm\n</think>\n\nSo", ("hm", "So")),
        (FORMATS[2], "<think>\nhm", (None, None)),
        (FORMATS[3], "Sure, ", (None, "Sure, ")),
        (FORMATS[3], ' {"na', (None, None)),
    ],
)
def test_settled_text_streams_before_the_end(
    fmt: CompletionFormat, prefix: str, settled: tuple[str | None, str | None]
) -> None:
    assert partial_reply(prefix, fmt) == settled
