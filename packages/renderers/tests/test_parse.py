"""parse_completion: sampled ids back to an AssistantMessage, tolerant of what sampling produces."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.messages import AssistantMessage, ToolCall
from foveal.renderers.rendering import Renderer

import rendering_fixtures as rf

ROUND_TRIP = settings(rf.PARITY, max_examples=60)
# Text the templates pass through unchanged: no markers, no newline at either end (Qwen3 strips those).
PLAIN = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=30).filter(lambda t: "<" not in t)
ARGUMENTS = st.dictionaries(
    st.sampled_from(("q", "n", "ünï")), st.one_of(st.integers(), PLAIN, st.booleans()), max_size=3
)
CALLS = st.lists(st.builds(ToolCall, name=st.sampled_from(("lookup", "f_2")), arguments=ARGUMENTS), max_size=2)


def sampled(renderer: Renderer, reply: AssistantMessage, stop: bool = True) -> list[int]:
    """Ids of what the template writes for `reply` after the generation prompt."""
    user = {"role": "user", "content": "q"}
    before = renderer.template_text([user], add_generation_prompt=True)
    text = renderer.template_text([user, reply])[len(before) :].rstrip("\n")
    return renderer.tokenizer(text if stop else text.removesuffix("<|im_end|>"), add_special_tokens=False)["input_ids"]


@ROUND_TRIP
@given(content=PLAIN, reasoning=PLAIN, calls=CALLS, stop=st.booleans())
def test_qwen3_round_trips_reasoning_content_and_tool_calls(
    content: str, reasoning: str, calls: Any, stop: bool
) -> None:
    renderer = rf.renderer("qwen3")
    reply = AssistantMessage(content=content, reasoning_content=reasoning, tool_calls=calls)
    assert renderer.parse_completion(sampled(renderer, reply, stop)) == reply


@ROUND_TRIP
@given(content=PLAIN, calls=CALLS)
def test_qwen3_vl_round_trips_content_and_tool_calls(content: str, calls: Any) -> None:
    renderer = rf.renderer("qwen3_vl")
    reply = AssistantMessage(content=content, tool_calls=calls)
    assert renderer.parse_completion(sampled(renderer, reply)) == reply


@ROUND_TRIP
@given(content=st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
def test_qwen2_vl_round_trips_any_content(content: str) -> None:
    renderer = rf.renderer("qwen2_vl")
    assert renderer.parse_completion(sampled(renderer, AssistantMessage(content=content))) == AssistantMessage(
        content=content
    )


def encode(renderer: Renderer, text: str) -> list[int]:
    return renderer.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_after_the_stop_token_is_ignored() -> None:
    renderer = rf.renderer("qwen3_vl")
    parsed = renderer.parse_completion(encode(renderer, "done<|im_end|>\n<|im_start|>user\nmore"))
    assert parsed == AssistantMessage(content="done")


def test_stop_tokens_come_from_the_tokenizer() -> None:
    for source in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3"):
        renderer = rf.renderer(source)
        expected = renderer.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        assert list(renderer.stop_token_ids) == expected
        assert renderer.tokenizer.eos_token_id in renderer.stop_token_ids


def test_reasoning_cut_off_by_the_token_budget_is_kept_as_reasoning() -> None:
    renderer = rf.renderer("qwen3")
    parsed = renderer.parse_completion(encode(renderer, "<think>\nstep one, step tw"))
    assert parsed == AssistantMessage(content="", reasoning_content="step one, step tw")


def test_malformed_tool_call_json_stays_in_content_with_an_error() -> None:
    renderer = rf.renderer("qwen3")
    good = '<tool_call>\n{"name": "lookup", "arguments": {"q": "cat"}}\n</tool_call>'
    bad = '<tool_call>\n{"name": "lookup", "arguments": {"q": </tool_call>'
    parsed = renderer.parse_completion(encode(renderer, f"<think>\n\n</think>\n\nOK\n{good}\n{bad}<|im_end|>"))
    assert parsed.tool_calls == (ToolCall(name="lookup", arguments={"q": "cat"}),)
    assert parsed.content == "OK" + bad
    assert len(parsed.tool_call_errors) == 1
    assert parsed.tool_call_errors[0].raw == bad
    assert "invalid JSON" in parsed.tool_call_errors[0].error


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('<tool_call>\n{"name": "lookup", "arguments": {"q": "ca', "unterminated"),
        ('<tool_call>\n["lookup"]\n</tool_call>', 'string "name"'),
        ('<tool_call>\n{"name": "lookup", "arguments": [1]}\n</tool_call>', "JSON object"),
    ],
)
def test_unusable_tool_calls_are_flagged_not_raised(body: str, error: str) -> None:
    renderer = rf.renderer("qwen3_vl")
    parsed = renderer.parse_completion(encode(renderer, body))
    assert parsed.tool_calls == ()
    assert parsed.content == body
    assert error in parsed.tool_call_errors[0].error


def test_qwen2_vl_does_not_read_tool_calls_its_template_cannot_write() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    text = '<tool_call>\n{"name": "lookup", "arguments": {}}\n</tool_call>'
    assert renderer.parse_completion(encode(renderer, text)) == AssistantMessage(content=text)


def test_empty_completion_parses_to_an_empty_message() -> None:
    for source in ("qwen2_vl", "qwen3_vl", "qwen3"):
        assert rf.renderer(source).parse_completion([]) == AssistantMessage(content="")
