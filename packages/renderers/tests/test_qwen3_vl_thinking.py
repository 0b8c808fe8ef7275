"""Qwen3-VL Thinking: detection from the template, the `<think>`-opening generation prompt, reasoning kept only
after the last query, and completions parsed as starting inside the opened reasoning block."""

from __future__ import annotations

from typing import Any

import pytest

from foveal.renderers.errors import UnknownFamily
from foveal.renderers.tiny import build_tiny_processor

import rendering_fixtures as rf

SOURCE = "qwen3_vl_thinking"
CALL = '<tool_call>\n{"name": "lookup", "arguments": {"q": "cat"}}\n</tool_call>'


def image() -> dict[str, Any]:
    return {"type": "image", "image": rf.image_source(0, "pil")}


def test_the_thinking_template_is_detected_and_told_apart_from_the_instruct_one() -> None:
    assert rf.renderer(SOURCE).family == "qwen3_vl_thinking"
    assert rf.renderer("qwen3_vl").family == "qwen3_vl"
    assert rf.renderer(SOURCE).adapter.layout_family == "qwen3_vl"
    with pytest.raises(UnknownFamily):
        rf.renderer.__wrapped__(SOURCE, "qwen3_vl")
    with pytest.raises(UnknownFamily):
        rf.renderer.__wrapped__("qwen3_vl", "qwen3_vl_thinking")


def test_the_generation_prompt_opens_the_reasoning_block_and_belongs_to_no_message_content() -> None:
    renderer = rf.renderer(SOURCE)
    messages = [{"role": "user", "content": [image(), {"type": "text", "text": "what is it"}]}]
    text = renderer.template_text(messages, add_generation_prompt=True)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
    rendered = renderer.render(messages, add_generation_prompt=True)
    prompt = [i for i, owner in enumerate(rendered.message_indices) if owner == 1]
    assert renderer.tokenizer.decode([rendered.token_ids[i] for i in prompt]) == "<|im_start|>assistant\n<think>\n"
    assert not any(rendered.content_mask[i] for i in prompt)


def test_reasoning_is_kept_only_after_the_last_user_query() -> None:
    renderer = rf.renderer(SOURCE)
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "add"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "", "reasoning_content": "add again", "tool_calls": [
            {"name": "lookup", "arguments": {"q": "cat"}}]},
        {"role": "tool", "content": [image()]},
        {"role": "assistant", "content": "<think>\nseen\n</think>\n\n6"},
    ]  # fmt: skip
    assert renderer.template_text(messages) == (
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nand 3+3?<|im_end|>\n"
        f"<|im_start|>assistant\n<think>\nadd again\n</think>\n\n{CALL}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\nseen\n</think>\n\n6<|im_end|>\n"
    )
    assert not renderer.prefix_stable and "dropped" in renderer.prefix_note


@pytest.mark.parametrize(
    ("sampled", "reasoning", "content", "calls"),
    [
        ("plan\n</think>\n\nanswer", "plan", "answer", 0),
        ("still thinking", "still thinking", "", 0),
        ("\n</think>\n\nshort", "", "short", 0),
        ("<think>\nre-opened\n</think>\n\nx", "re-opened", "x", 0),
        (f"look it up\n</think>\n\n{CALL}", "look it up", "", 1),
        (f"why\n</think>\n\nfirst\n{CALL}", "why", "first", 1),
    ],
)
def test_a_completion_starts_inside_the_opened_block_and_splits_its_reasoning(
    sampled: str, reasoning: str, content: str, calls: int
) -> None:
    renderer = rf.renderer(SOURCE)
    ids = renderer.tokenizer.encode(sampled + "<|im_end|>", add_special_tokens=False)
    message = renderer.parse_completion(ids)
    assert (message.reasoning_content, message.text(), len(message.tool_calls)) == (reasoning, content, calls)


def test_a_sampled_turn_round_trips_into_the_full_render_and_bridges_exactly() -> None:
    renderer = rf.renderer(SOURCE)
    messages = [{"role": "user", "content": [image(), {"type": "text", "text": "name it"}]}]
    prompt = renderer.render(messages, add_generation_prompt=True)
    sampled = renderer.tokenizer.encode(f"let me see\n</think>\n\n{CALL}<|im_end|>", add_special_tokens=False)
    turn = renderer.append_completion(prompt, sampled)
    assert turn.messages[-1].reasoning_content == "let me see" and turn.messages[-1].tool_calls
    full = renderer.render(turn.messages)
    assert full.token_ids == turn.token_ids + tuple(renderer.tokenizer.encode("\n", add_special_tokens=False))
    bridged = renderer.bridge_exact(turn, [{"role": "tool", "content": "a cat"}])
    assert bridged is not None and bridged.token_ids[: len(turn)] == turn.token_ids
    assert bridged.token_ids == renderer.render(bridged.messages, add_generation_prompt=True).token_ids


def test_the_tiny_template_is_the_thinking_one() -> None:
    template = (build_tiny_processor(SOURCE) / "chat_template.jinja").read_text(encoding="utf-8")
    assert "<|im_start|>assistant\\n<think>\\n" in template
