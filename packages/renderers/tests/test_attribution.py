"""Per-token message attribution: which message wrote each token, the role per token, loss masks by message.

Checked by decoding: the tokens attributed to a message spell its turn (its header, its text, its close), the
tokens of no message are only the template's own additions, and attribution survives RL's extension steps.
"""

from __future__ import annotations

from typing import Any

import pytest

from foveal.renderers.rendering import RenderedConversation, Renderer

import rendering_fixtures as rf


def image(index: int = 0) -> dict[str, Any]:
    return {"type": "image", "image": rf.image_source(index, "pil")}


def conversation(vision: bool, system: bool = True) -> list[dict[str, Any]]:
    first: Any = [image(0), {"type": "text", "text": "what is this"}] if vision else "what is this"
    head = [{"role": "system", "content": "be brief"}] if system else []
    return [
        *head,
        {"role": "user", "content": first},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "and its colour"},
        {"role": "assistant", "content": "grey"},
    ]


def text_of(renderer: Renderer, rendered: RenderedConversation, index: int) -> str:
    """The decoded tokens attributed to message `index`, placeholders left out."""
    ids = [t for t, i in zip(rendered.token_ids, rendered.message_indices, strict=True) if i == index]
    return renderer.tokenizer.decode([t for t in ids if t != renderer.image_token_id])


@pytest.mark.parametrize("source", ["qwen2_5_vl", "qwen3_vl", "qwen3"])
def test_each_message_owns_exactly_its_own_turn(source: str) -> None:
    renderer = rf.renderer(source)
    messages = conversation(vision=source != "qwen3")
    rendered = renderer.render(messages, add_generation_prompt=False)
    assert len(rendered.message_indices) == len(rendered)
    turns = ["system\nbe brief", "user\nwhat is this", "assistant\na cat", "user\nand its colour", "assistant\ngrey"]
    vision = "<|vision_start|><|vision_end|>" if source != "qwen3" else ""
    expected = [f"<|im_start|>{turn}<|im_end|>\n" for turn in turns]
    expected[1] = expected[1].replace("user\n", "user\n" + vision)
    if source == "qwen3":  # its template writes an (empty) think block into the turn after the last query
        expected[4] = expected[4].replace("assistant\n", "assistant\n<think>\n\n</think>\n\n")
    assert [text_of(renderer, rendered, i) for i in range(len(messages))] == expected
    assert list(rendered.message_indices) == sorted(rendered.message_indices)  # turns in order, nothing interleaved
    for image_span in rendered.images:
        assert set(rendered.message_indices[image_span.offset : image_span.offset + image_span.length]) == {1}


LLAMA_HEAD = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


def llama_turn(role: str, text: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"


def test_llama3_each_message_owns_its_turn_and_the_bos_belongs_to_no_message() -> None:
    renderer = rf.renderer("llama3")
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
    messages = [
        *conversation(vision=False)[:3],
        {"role": "assistant", "content": "", "tool_calls": [{"name": "look", "arguments": {"q": "cat"}}]},
        {"role": "tool", "content": "grey"},
        {"role": "assistant", "content": "grey"},
    ]
    rendered = renderer.render(messages, tools=tools, add_generation_prompt=True)
    assert text_of(renderer, rendered, -1) == "<|begin_of_text|>"
    tool_json = '{\n    "type": "function",\n    "function": {\n        "name": "look",\n        "parameters": {\n'
    first_user = text_of(renderer, rendered, 1)
    assert first_user.startswith("<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions")
    assert tool_json in first_user and first_user.endswith("}\n\nwhat is this<|eot_id|>")
    assert [text_of(renderer, rendered, i) for i in (0, 2, 3, 4, 5, 6)] == [
        llama_turn("system", "Environment: ipython\n" + LLAMA_HEAD + "be brief"),
        llama_turn("assistant", "a cat"),
        llama_turn("assistant", '{"name": "look", "parameters": {"q": "cat"}}'),
        llama_turn("ipython", '"grey"'),
        llama_turn("assistant", "grey"),
        "<|start_header_id|>assistant<|end_header_id|>\n\n",  # the generation prompt: the next message's
    ]
    assert list(rendered.message_indices) == sorted(rendered.message_indices)
    trained = [t for t, m in zip(rendered.token_ids, rendered.loss_mask, strict=True) if m]
    call = '{"name": "look", "parameters": {"q": "cat"}}'
    assert renderer.tokenizer.decode(trained) == f"a cat<|eot_id|>{call}<|eot_id|>grey<|eot_id|>"


@pytest.mark.parametrize("source", ["qwen2_5_vl", "qwen3", "llama3"])
def test_system_turns_the_template_adds_belong_to_no_message(source: str) -> None:
    renderer = rf.renderer(source)
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}] * (source == "qwen3")
    rendered = renderer.render(conversation(vision=False, system=False), tools=tools)
    added = text_of(renderer, rendered, -1)
    if source == "llama3":  # its system turn is always there, and the tools go into the first user message
        assert added == "<|begin_of_text|>" + llama_turn("system", LLAMA_HEAD)
        assert text_of(renderer, rendered, 0) == llama_turn("user", "what is this")
        assert rendered.token_roles()[: rendered.message_indices.index(0)] == ("",) * rendered.message_indices.index(0)
        return
    assert added.startswith("<|im_start|>system\n") and added.endswith("<|im_end|>\n")
    assert "You are a helpful assistant." in added if source == "qwen2_5_vl" else "# Tools" in added
    assert rendered.token_roles()[: len(renderer.tokenizer(added)["input_ids"])] == ("",) * len(
        renderer.tokenizer(added)["input_ids"]
    )
    assert text_of(renderer, rendered, 0) == "<|im_start|>user\nwhat is this<|im_end|>\n"


def test_roles_per_token_follow_the_messages_and_the_generation_prompt_is_the_assistants() -> None:
    renderer = rf.renderer("qwen3_vl")
    messages = conversation(vision=True)[:4]
    prompt = renderer.render(messages, add_generation_prompt=True)
    roles = prompt.token_roles()
    assert [roles[i] for i, index in enumerate(prompt.message_indices) if index == len(messages)] == ["assistant"] * 3
    assert text_of(renderer, prompt, len(messages)) == "<|im_start|>assistant\n"
    assert {role for role, index in zip(roles, prompt.message_indices, strict=True) if index == 1} == {"user"}
    assert set(roles) == {"system", "user", "assistant"}


def test_sampled_and_bridged_tokens_are_attributed_like_a_full_render() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    messages = conversation(vision=True)
    prompt = renderer.render(messages[:2], add_generation_prompt=True)
    sampled = renderer.tokenizer("a cat<|im_end|>", add_special_tokens=False)["input_ids"]
    turn = renderer.append_completion(prompt, sampled)
    assert turn.message_indices[len(prompt) :] == (2,) * len(sampled)
    bridged = renderer.bridge(turn, [messages[3]], add_generation_prompt=True)
    full = renderer.render(messages[:4], add_generation_prompt=True)
    assert bridged.token_ids == full.token_ids
    # The template's "\n" after the sampled <|im_end|> closes message 2's turn, as in the full render.
    assert bridged.message_indices == full.message_indices


@pytest.mark.parametrize("stop", ["<|eot_id|>", ""])
def test_llama3_bridges_after_a_sampled_or_cut_off_turn_like_a_full_render(stop: str) -> None:
    renderer = rf.renderer("llama3")
    messages = conversation(vision=False)
    prompt = renderer.render(messages[:2], add_generation_prompt=True)
    sampled = renderer.tokenizer("a cat" + stop, add_special_tokens=False)["input_ids"]
    bridged = renderer.bridge(renderer.append_completion(prompt, sampled), [messages[3]], add_generation_prompt=True)
    full = renderer.render(messages[:4], add_generation_prompt=True)
    assert bridged.token_ids == full.token_ids  # no separator after <|eot_id|>; a cut-off turn gets one
    assert bridged.message_indices == full.message_indices


def gemma_turn(role: str, text: str) -> str:
    return f"<start_of_turn>{role}\n{text}<end_of_turn>\n"


def test_gemma3_system_text_belongs_to_the_system_message_inside_the_first_user_turn() -> None:
    renderer = rf.renderer("gemma3")
    rendered = renderer.render(conversation(vision=True), add_generation_prompt=True)
    assert text_of(renderer, rendered, -1) == "<bos>"
    image_run = "\n\n<start_of_image><end_of_image>\n\n"  # the placeholders left out
    assert text_of(renderer, rendered, 0) == "be brief\n\n"
    assert text_of(renderer, rendered, 1) == f"<start_of_turn>user\n{image_run}what is this<end_of_turn>\n"
    assert [text_of(renderer, rendered, i) for i in (2, 3, 4, 5)] == [
        gemma_turn("model", "a cat"),
        gemma_turn("user", "and its colour"),
        gemma_turn("model", "grey"),
        "<start_of_turn>model\n",  # the generation prompt: the next message's
    ]
    for image_span in rendered.images:
        assert set(rendered.message_indices[image_span.offset : image_span.offset + image_span.length]) == {1}
    trained = [t for t, m in zip(rendered.token_ids, rendered.loss_mask, strict=True) if m]
    assert renderer.tokenizer.decode(trained) == "a cat<end_of_turn>grey<end_of_turn>"


@pytest.mark.parametrize("stop", ["<end_of_turn>", "<eos>", ""])
def test_gemma3_bridges_after_a_sampled_or_cut_off_turn_like_a_full_render(stop: str) -> None:
    renderer = rf.renderer("gemma3")
    messages = conversation(vision=True)
    prompt = renderer.render(messages[:2], add_generation_prompt=True)
    sampled = renderer.tokenizer("a cat" + stop, add_special_tokens=False)["input_ids"]
    bridged = renderer.bridge(renderer.append_completion(prompt, sampled), [messages[3]], add_generation_prompt=True)
    full = renderer.render(messages[:4], add_generation_prompt=True)
    if stop == "<eos>":  # a sampled <eos> is kept, then the turn's "\n": not what the template writes
        assert renderer.bridge_exact(renderer.append_completion(prompt, sampled), [messages[3]]) is None
        return
    assert bridged.token_ids == full.token_ids
    assert bridged.message_indices == full.message_indices
    assert renderer.bridge_exact(renderer.append_completion(prompt, sampled), [messages[3]]) == bridged


def test_loss_mask_by_message_selects_turns() -> None:
    renderer = rf.renderer("qwen3_vl")
    rendered = renderer.render(conversation(vision=True))
    assert rendered.loss_mask_where(lambda index, message: True) == rendered.loss_mask
    last = renderer.render(conversation(vision=True), loss_on="last_assistant").loss_mask
    assert rendered.loss_mask_where(lambda index, message: index == 4) == last
    first = rendered.loss_mask_where(lambda index, message: index == 2)
    trained = renderer.tokenizer.decode([t for t, m in zip(rendered.token_ids, first, strict=True) if m])
    assert trained == "a cat<|im_end|>"
    assert not any(rendered.loss_mask_where(lambda index, message: message.role == "user"))


def test_tinker_chunks_carry_no_messages() -> None:
    renderer = rf.renderer("qwen3_vl")
    rendered = renderer.render(conversation(vision=True)[:2], add_generation_prompt=True)
    again = renderer.render_model_input(renderer.to_model_input(rendered))
    assert again.token_ids == rendered.token_ids and set(again.message_indices) == {-1}
    assert set(again.token_roles()) == {""}
