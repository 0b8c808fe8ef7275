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
ONE_CALL = st.builds(ToolCall, name=st.sampled_from(("lookup", "f_2")), arguments=ARGUMENTS)


def sampled(renderer: Renderer, reply: AssistantMessage, stop: bool = True) -> list[int]:
    """Ids of what the template writes for `reply` after the generation prompt."""
    user = {"role": "user", "content": "q"}
    before = renderer.template_text([user], add_generation_prompt=True)
    text = renderer.template_text([user, reply])[len(before) :].rstrip("\n")
    end = renderer.adapter.stop_tokens[0]
    return renderer.tokenizer(text if stop else text.removesuffix(end), add_special_tokens=False)["input_ids"]


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


@ROUND_TRIP
@given(
    content=PLAIN.map(str.strip).filter(lambda t: not t.startswith('{"name"')),  # trimmed; not a call's start
    call=st.one_of(st.none(), ONE_CALL),
    stop=st.booleans(),
)
def test_llama3_round_trips_content_or_its_one_json_tool_call(content: str, call: Any, stop: bool) -> None:
    renderer = rf.renderer("llama3")
    reply = AssistantMessage(content="", tool_calls=(call,)) if call else AssistantMessage(content=content)
    assert renderer.parse_completion(sampled(renderer, reply, stop)) == reply


@ROUND_TRIP
@given(content=PLAIN.map(str.strip), stop=st.booleans())
def test_gemma3_round_trips_plain_content(content: str, stop: bool) -> None:
    renderer = rf.renderer("gemma3")
    reply = AssistantMessage(content=content)
    assert renderer.parse_completion(sampled(renderer, reply, stop)) == reply


def test_gemma3_reads_no_tool_calls_its_template_cannot_write() -> None:
    renderer = rf.renderer("gemma3")
    text = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    parsed = renderer.parse_completion(encode(renderer, text + "<end_of_turn>\n<start_of_turn>user"))
    assert parsed == AssistantMessage(content=text)


def encode(renderer: Renderer, text: str) -> list[int]:
    return renderer.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_after_the_stop_token_is_ignored() -> None:
    renderer = rf.renderer("qwen3_vl")
    parsed = renderer.parse_completion(encode(renderer, "done<|im_end|>\n<|im_start|>user\nmore"))
    assert parsed == AssistantMessage(content="done")


def test_stop_tokens_come_from_the_tokenizer() -> None:
    for source in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3", "llama3", "gemma3"):
        renderer = rf.renderer(source)
        stops = ["<|im_end|>", "<|endoftext|>"]
        if source == "llama3":
            stops = ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"]
        if source == "gemma3":
            stops = ["<end_of_turn>", "<eos>"]
        assert list(renderer.stop_token_ids) == renderer.tokenizer.convert_tokens_to_ids(stops)
        assert renderer.tokenizer.eos_token_id in renderer.stop_token_ids


def test_llama3_stops_at_any_of_its_stop_tokens() -> None:
    renderer = rf.renderer("llama3")
    for stop in ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"):
        parsed = renderer.parse_completion(encode(renderer, f"done{stop}<|start_header_id|>user<|end_header_id|>"))
        assert parsed == AssistantMessage(content="done")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"name": "lookup", "parameters": {"q": "ca', "invalid JSON"),
        ('{"name": "lookup", "parameters": {"q": "cat"}} and more', "invalid JSON"),
        ('{"name": 3, "parameters": {}}', 'string "name"'),
        ('{"name": "lookup", "parameters": [1]}', "JSON object"),
        ('{"name": "lookup", "arguments": {"q": "cat"}}', "JSON object"),
    ],
)
def test_llama3_unusable_json_calls_stay_content_with_an_error(body: str, error: str) -> None:
    renderer = rf.renderer("llama3")
    parsed = renderer.parse_completion(encode(renderer, body + "<|eot_id|>"))
    assert parsed.tool_calls == () and parsed.content == body
    assert parsed.tool_call_errors[0].raw == body and error in parsed.tool_call_errors[0].error


def test_llama3_reads_a_call_after_python_tag_and_leaves_other_json_as_content() -> None:
    renderer = rf.renderer("llama3")
    call = '<|python_tag|>{"name": "f", "parameters": {"a": 1}}<|eom_id|>'
    tagged = renderer.parse_completion(encode(renderer, call))
    assert tagged == AssistantMessage(content="", tool_calls=(ToolCall(name="f", arguments={"a": 1}),))
    data = '{"answer": 4}'
    assert renderer.parse_completion(encode(renderer, data)) == AssistantMessage(content=data)


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
    for source in ("qwen2_vl", "qwen3_vl", "qwen3", "llama3", "gemma3"):
        assert rf.renderer(source).parse_completion([]) == AssistantMessage(content="")
