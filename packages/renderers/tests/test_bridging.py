"""Multi-turn bridging: extending a conversation keeps every earlier token, sampled ones included.

The "model" here samples exactly what the template would write for a reply (the template's text after the
generation prompt, tokenized), so where a family is prefix-stable the bridged sequence must equal a fresh
render of the whole conversation, and where it is not (Qwen3 reasoning, Qwen3-VL tool grouping, sampled
text that tokenizes differently) the difference is shown and bridging still keeps the sampled ids.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.messages import InvalidMessage
from foveal.renderers.rendering import RenderedConversation, Renderer

import rendering_fixtures as rf

BRIDGING = settings(rf.PARITY, max_examples=40)
# Words that never merge with the header's "\n" (no leading whitespace), so sampled ids equal re-rendered ids.
SAFE_TEXT = st.lists(
    st.sampled_from(("cat", "sees", "a", "red", "ball", "42", "émoji😀", "ok.")), min_size=1, max_size=6
).map(" ".join)


def sampled_reply(
    renderer: Renderer, prompt: RenderedConversation, reply: dict[str, Any], stop: bool = True
) -> list[int]:
    """The ids a model writing exactly like the template would sample after `prompt` (stop token included)."""
    before = renderer.template_text(prompt.messages, prompt.tools, add_generation_prompt=True)
    after = renderer.template_text([*prompt.messages, reply], prompt.tools)
    assert after.startswith(before)
    text = after[len(before) :].rstrip("\n")
    text = text if stop else text.removesuffix("<|im_end|>")
    return renderer.tokenizer(text, add_special_tokens=False)["input_ids"]


def walk(renderer: Renderer, messages: list[dict[str, Any]]) -> RenderedConversation:
    """Render the conversation turn by turn, as an RL loop does: prompt, sample, bridge the next turns."""
    first_reply = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    conversation = renderer.render(messages[:first_reply], add_generation_prompt=True)
    index = first_reply
    while index < len(messages):
        conversation = renderer.append_completion(conversation, sampled_reply(renderer, conversation, messages[index]))
        following = messages[index + 1 :]
        nxt = next((i for i, m in enumerate(following) if m["role"] == "assistant"), len(following))
        if following[:nxt]:
            conversation = check_bridge(renderer, conversation, following[:nxt], nxt < len(following))
        index += nxt + 1
    return conversation


def check_bridge(
    renderer: Renderer, previous: RenderedConversation, new: list[dict[str, Any]], prompt: bool
) -> RenderedConversation:
    bridged = renderer.bridge(previous, new, add_generation_prompt=prompt)
    assert bridged.token_ids[: len(previous)] == previous.token_ids
    assert bridged.loss_mask[: len(previous)] == previous.loss_mask
    return bridged


def assert_same_up_to_final_separator(
    renderer: Renderer, walked: RenderedConversation, full: RenderedConversation
) -> None:
    """A walk ends on the sampled `<|im_end|>`; a render of the same turns also writes the `\\n` after it."""
    assert full.token_ids[: len(walked)] == walked.token_ids
    assert renderer.tokenizer.decode(full.token_ids[len(walked) :]) == "\n"


@st.composite
def safe_conversations(draw: st.DrawFn, images: bool) -> list[dict[str, Any]]:
    user = (
        st.one_of(SAFE_TEXT, st.builds(lambda t, p: [p, {"type": "text", "text": t}], SAFE_TEXT, rf.IMAGE_PARTS))
        if images
        else SAFE_TEXT
    )
    messages: list[dict[str, Any]] = [{"role": "system", "content": draw(SAFE_TEXT)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(user)})
        messages.append({"role": "assistant", "content": draw(SAFE_TEXT)})
    return messages


@BRIDGING
@given(messages=safe_conversations(images=True))
def test_prefix_stable_family_bridges_to_the_full_render(messages: list[dict[str, Any]]) -> None:
    renderer = rf.renderer("qwen2_5_vl")
    walked = walk(renderer, messages)
    full = renderer.render(messages)
    assert_same_up_to_final_separator(renderer, walked, full)
    assert walked.loss_mask == full.loss_mask[: len(walked)]
    assert [i.descriptor for i in walked.images] == [i.descriptor for i in full.images]
    assert walked.message_indices == full.message_indices[: len(walked)]
    nxt = [{"role": "user", "content": "more"}]
    assert renderer.bridge_exact(walked, nxt) == renderer.bridge(walked, nxt)  # proven: equals a full render


@BRIDGING
@given(messages=safe_conversations(images=True))
def test_qwen3_vl_bridges_user_turns_to_the_full_render(messages: list[dict[str, Any]]) -> None:
    renderer = rf.renderer("qwen3_vl")
    assert_same_up_to_final_separator(renderer, walk(renderer, messages), renderer.render(messages))


def test_qwen3_bridging_keeps_reasoning_that_a_rerender_drops() -> None:
    renderer = rf.renderer("qwen3")
    assert not renderer.prefix_stable
    prompt = renderer.render([{"role": "user", "content": "2+2?"}], add_generation_prompt=True)
    reply = {"role": "assistant", "content": "4", "reasoning_content": "add"}
    done = renderer.append_completion(prompt, sampled_reply(renderer, prompt, reply))
    assert done.messages[-1].reasoning_content == "add"
    nxt = {"role": "user", "content": "3+3?"}
    bridged = check_bridge(renderer, done, [nxt], True)
    rerendered = renderer.render([*done.messages, nxt], add_generation_prompt=True)
    assert rerendered.token_ids[: len(done)] != done.token_ids  # the template dropped the reasoning
    assert renderer.bridge_exact(done, [nxt]) is None  # cannot prove: callers that need exactness re-render
    decode = renderer.tokenizer.decode
    continuation = "\n" + renderer.template_text([nxt], add_generation_prompt=True)
    assert decode(bridged.token_ids[len(done) :]) == continuation
    assert sum(bridged.loss_mask) == sum(done.loss_mask) == len(done) - len(prompt)


def test_qwen3_vl_tool_grouping_is_not_prefix_stable_and_bridging_refuses_to_reopen_a_turn() -> None:
    renderer = rf.renderer("qwen3_vl")
    assert not renderer.prefix_stable
    head = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}]
    one, two = {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"}
    shorter = renderer.template_text([*head, one])
    assert not renderer.template_text([*head, one, two]).startswith(shorter)
    previous = renderer.render([*head, one])
    with pytest.raises(InvalidMessage) as raised:
        renderer.bridge(previous, [two])
    assert raised.value.field == "new_messages[0]"


@pytest.mark.parametrize("source", ["qwen2_vl", "qwen3_vl", "qwen3"])
def test_sampled_ids_are_kept_even_when_they_tokenize_differently(source: str) -> None:
    renderer = rf.renderer(source)
    prompt = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    encode = renderer.tokenizer.convert_tokens_to_ids
    # "\n" then "\n" as two single-newline tokens: the tokenizer itself would merge them into one.
    odd = [*renderer.tokenizer("\n", add_special_tokens=False)["input_ids"] * 2, encode("<|im_end|>")]
    done = renderer.append_completion(prompt, odd)
    bridged = renderer.bridge(done, [{"role": "user", "content": "again"}])
    assert bridged.token_ids[: len(done)] == (*prompt.token_ids, *odd)
    assert list(bridged.loss_mask[len(prompt) : len(done)]) == [1] * len(odd)
    # A full render would write one "\n\n" token where the model sampled two: not provably exact.
    assert renderer.bridge_exact(done, [{"role": "user", "content": "again"}]) is None


@pytest.mark.parametrize("source", ["qwen2_5_vl", "qwen3"])
def test_truncated_completion_is_closed_with_an_untrained_stop_token(source: str) -> None:
    renderer = rf.renderer(source)
    prompt = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    cut = sampled_reply(renderer, prompt, {"role": "assistant", "content": "cut off here"}, stop=False)
    done = renderer.append_completion(prompt, cut)
    bridged = renderer.bridge(done, [{"role": "user", "content": "go on"}])
    im_end = renderer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert bridged.token_ids[len(done)] == im_end
    assert bridged.loss_mask[len(done)] == 0
    assert renderer.tokenizer.decode(bridged.token_ids[len(done) + 1 :]).startswith("\n<|im_start|>user\ngo on")


def test_completion_ending_in_endoftext_is_not_closed_twice() -> None:
    renderer = rf.renderer("qwen3")
    prompt = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = [
        *renderer.tokenizer("yo", add_special_tokens=False)["input_ids"],
        renderer.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]
    bridged = renderer.bridge(renderer.append_completion(prompt, ids), [{"role": "user", "content": "x"}])
    assert renderer.tokenizer.decode(bridged.token_ids[len(prompt) + len(ids) :]).startswith("\n<|im_start|>user")


def test_bridge_needs_a_finished_turn_and_append_needs_a_prompt() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    prompt = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    with pytest.raises(InvalidMessage) as raised:
        renderer.bridge(prompt, [{"role": "user", "content": "x"}])
    assert raised.value.field == "previous.awaiting_completion"
    closed = renderer.render([{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidMessage) as raised:
        renderer.append_completion(closed, [1, 2])
    assert raised.value.field == "prompt.awaiting_completion"


def test_bridging_a_rendered_conversation_adds_no_separator_twice() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    nxt = {"role": "user", "content": "again"}
    bridged = renderer.bridge(renderer.render(messages), [nxt])
    assert bridged.token_ids == renderer.render([*messages, nxt], add_generation_prompt=True).token_ids


def test_generic_family_bridges_a_stable_template() -> None:
    renderer = rf.renderer("qwen2_5_vl", "generic")
    assert renderer.prefix_stable
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    messages += [{"role": "user", "content": "more"}, {"role": "assistant", "content": "ok"}]
    assert_same_up_to_final_separator(renderer, walk(renderer, messages), renderer.render(messages))
