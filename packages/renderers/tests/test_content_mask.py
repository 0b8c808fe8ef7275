"""The content mask: which tokens a message itself wrote (its text, reasoning, tool calls, image blocks) and which
the template wrote around it (headers, turn markers, separators, BOS, preambles, the generation prompt).

Checked by decoding: the content tokens of each message spell exactly its content as the template prints it, the
only trained tokens that are not content are stop tokens, renders of fewer turns mark the same prefix, and the
mask survives RL's extension steps.
"""

from __future__ import annotations

from typing import Any

import pytest

from foveal.renderers.layout.smolvlm import image_block
from foveal.renderers.rendering import RenderedConversation, Renderer

import rendering_fixtures as rf

CALL = {"name": "lookup", "arguments": {"q": "cat"}}
QWEN_CALL = '<tool_call>\n{"name": "lookup", "arguments": {"q": "cat"}}\n</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
EMPTY_THINK = "<think>\n\n</think>\n\n"


def image() -> dict[str, Any]:
    return {"type": "image", "image": rf.image_source(0, "pil")}


def content_text(renderer: Renderer, rendered: RenderedConversation, index: int) -> str:
    """The decoded content tokens of message `index`, placeholders left out."""
    ids = [t for t, bit in zip(rendered.token_ids, rendered.content_of(index), strict=True) if bit]
    return renderer.tokenizer.decode([t for t in ids if t != renderer.image_token_id])


def chat(first: Any, system: bool = True, reasoning: str | None = None) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": "be brief"}] if system else []
    reply: dict[str, Any] = {"role": "assistant", "content": "a cat"}
    if reasoning is not None:
        reply["reasoning_content"] = reasoning
    return [*head, {"role": "user", "content": first}, reply, {"role": "user", "content": "and its colour"},
            {"role": "assistant", "content": "grey"}]  # fmt: skip


VISION = "<|vision_start|><|vision_end|>"
SMOLVLM_BLOCK = "".join(value for kind, value in image_block(4, 4) if kind != "run")
"""The tiny smolvlm folder's block for pool image 0 (28 x 28 -> 128 x 128: 4 x 4 tiles), placeholders left out."""
CASES: list[tuple[str, list[dict[str, Any]], Any, list[str]]] = [
    ("qwen2_vl", chat([image(), {"type": "text", "text": "what is this"}]), None,
     ["be brief", VISION + "what is this", "a cat", "and its colour", "grey"]),
    ("qwen2_vl", chat("hi", system=False), None, ["hi", "a cat", "and its colour", "grey"]),
    ("qwen2_5_vl", chat([{"type": "text", "text": "a "}, image(), {"type": "text", "text": " b"}]), None,
     ["be brief", f"a {VISION} b", "a cat", "and its colour", "grey"]),
    ("qwen3_vl", chat([image(), {"type": "text", "text": "what is this"}]), None,
     ["be brief", VISION + "what is this", "a cat", "and its colour", "grey"]),
    ("qwen3_vl", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "look"},
                  {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "content": [image()]}, {"role": "tool", "content": "a cat"},
                  {"role": "assistant", "content": "done"}], TOOLS,
     ["be brief", "look", QWEN_CALL, VISION, "a cat", "done"]),
    ("qwen3_vl_thinking", chat([image(), {"type": "text", "text": "what is this"}], reasoning="hmm"), None,
     ["be brief", VISION + "what is this", "a cat", "and its colour", EMPTY_THINK + "grey"]),
    ("qwen3_vl_thinking", [{"role": "user", "content": "look"},
                           {"role": "assistant", "content": "", "reasoning_content": "use it", "tool_calls": [CALL]},
                           {"role": "tool", "content": "a cat"}, {"role": "assistant", "content": "done"}], TOOLS,
     ["look", "<think>\nuse it\n</think>\n\n" + QWEN_CALL, "a cat", EMPTY_THINK + "done"]),
    ("qwen3", chat("what is this", reasoning="hmm"), None,
     ["be brief", "what is this", "a cat", "and its colour", EMPTY_THINK + "grey"]),
    ("qwen3", [{"role": "user", "content": "look"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "content": "a cat"}], TOOLS, ["look", QWEN_CALL, "a cat"]),
    ("llama3", chat("  what is this "), None, ["be brief", "what is this", "a cat", "and its colour", "grey"]),
    ("llama3", [{"role": "user", "content": "look"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "tool", "content": "a cat"}, {"role": "assistant", "content": "done"}], TOOLS,
     ["look", '{"name": "lookup", "parameters": {"q": "cat"}}', '"a cat"', "done"]),
    ("gemma3", chat([{"type": "text", "text": "what is this"}, image()]), None,
     ["be brief", "what is this\n\n<start_of_image><end_of_image>\n\n", "a cat", "and its colour", "grey"]),
    ("gemma3", chat(" hi ", system=False), None, ["hi", "a cat", "and its colour", "grey"]),
    ("glm4v", chat([image(), {"type": "text", "text": "what is this"}], reasoning="hmm"), None,
     ["be brief", "<|begin_of_image|><|end_of_image|>what is this", "<think>hmm</think>a cat", "and its colour",
      "grey"]),
    # SmolVLM2's header "Role: " ends in a space that BPE joins to the first word: that token is the message's.
    ("smolvlm", chat([image(), {"type": "text", "text": "what is this"}]), None,
     [" be brief", SMOLVLM_BLOCK + "what is this", " a cat", " and its colour", " grey"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "messages", "tools", "expected"), CASES)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_content_tokens_of_each_message_spell_its_content_and_nothing_else(
    source: str, messages: list[dict[str, Any]], tools: Any, expected: list[str], add_generation_prompt: bool
) -> None:
    renderer = rf.renderer(source)
    rendered = renderer.render(messages, tools, add_generation_prompt)
    assert len(rendered.content_mask) == len(rendered) and set(rendered.content_mask) <= {0, 1}
    assert [content_text(renderer, rendered, i) for i in range(len(messages))] == expected
    for bit, owner in zip(rendered.content_mask, rendered.message_indices, strict=True):
        assert not bit or 0 <= owner < len(messages)  # template additions and the generation prompt: never
    for image_span in rendered.images:
        assert set(rendered.content_mask[image_span.offset : image_span.offset + image_span.length]) == {1}
    stops = set(renderer.stop_token_ids)
    for token, trained, bit in zip(rendered.token_ids, rendered.loss_mask, rendered.content_mask, strict=True):
        assert not trained or bit or token in stops  # an assistant turn trains its content and its stop token


@pytest.mark.parametrize(("source", "messages", "tools", "expected"), [c for c in CASES if c[0] != "qwen3_vl_thinking"])
def test_fewer_turns_mark_the_same_prefix_in_prefix_stable_families(
    source: str, messages: list[dict[str, Any]], tools: Any, expected: list[str]
) -> None:
    renderer = rf.renderer(source)
    full = renderer.render(messages, tools)
    if not renderer.prefix_stable:
        pytest.skip("the template rewrites earlier turns")
    for cut in range(1, len(messages)):
        if source == "gemma3" and messages[cut - 1]["role"] == "system":
            continue
        shorter = renderer.render(messages[:cut], tools)
        assert full.token_ids[: len(shorter)] == shorter.token_ids
        assert full.content_mask[: len(shorter)] == shorter.content_mask


@pytest.mark.parametrize("source", ["qwen2_vl", "qwen3_vl", "qwen3_vl_thinking", "qwen3", "llama3", "gemma3"])
def test_sampled_ids_are_content_but_their_stop_token_and_the_bridge_joint_are_not(source: str) -> None:
    renderer = rf.renderer(source)
    prompt = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    stop = renderer.stop_token_ids[0]
    sampled = [*renderer.tokenizer.encode("fine", add_special_tokens=False), stop]
    turn = renderer.append_completion(prompt, sampled)
    assert turn.content_mask == prompt.content_mask + (1,) * (len(sampled) - 1) + (0,)
    bridged = renderer.bridge(turn, [{"role": "user", "content": "more"}])
    assert bridged.content_mask[: len(turn)] == turn.content_mask
    assert content_text(renderer, bridged, 2) == "more"
    joint = [i for i in range(len(turn), len(bridged)) if bridged.message_indices[i] == 1]
    assert not any(bridged.content_mask[i] for i in joint)


def test_a_render_of_tinker_chunks_marks_nothing_as_content() -> None:
    renderer = rf.renderer("qwen3_vl")
    rendered = renderer.render([{"role": "user", "content": [image(), {"type": "text", "text": "hi"}]}])
    again = renderer.render_model_input(renderer.to_model_input(rendered))
    assert again.token_ids == rendered.token_ids
    assert again.content_mask == (0,) * len(again) and again.message_indices == (-1,) * len(again)


def test_the_generic_family_marks_nothing_as_content() -> None:
    renderer = rf.renderer("qwen2_5_vl", "generic")
    rendered = renderer.render(chat("hi"))
    assert rendered.content_mask == (0,) * len(rendered)
