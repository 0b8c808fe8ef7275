"""Token-for-token parity with `apply_chat_template` + the HF image processor, and the loss mask, per family.

Conversations are generated with hypothesis (300 per family, derandomized): text, images of 28..300 px
in every source form, several images, multi-turn, system prompts, tools and tool calls, grouped tool
responses, reasoning for qwen3, unicode/emoji/whitespace edge cases and empty content; for llama3 the
system turn with and without a system message, tools in the first user message, single JSON tool calls
(string arguments too), ipython tool results and later system messages; for gemma3 system text folded into
the first user turn (string or one text part), alternating user/model turns, 0-3 images per message in user
and model turns. The expected ids come only from the tiny tokenizers' real Jinja templates and the real image
processor (for gemma3 the real Gemma3Processor's own apply_chat_template, which expands each image marker in
the text); the expected mask only from the template string and the HF tokenizer's offsets.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from foveal.renderers.messages import parse_messages

import rendering_fixtures as rf

ASSISTANT_OPEN, TURN_END = "<|im_start|>assistant\n", "<|im_end|>"
TURN_MARKERS = {"llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>")}
"""Where an assistant turn's trained text starts and ends, for families that are not ChatML."""
TOOL_NAMES = ("lookup", "get_weather", "search_web")
TOOLS = tuple(
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} — ünïcode ok",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    for name in TOOL_NAMES
)
LOSS_MODES = ("assistant", "assistant", "last_assistant", "all")


TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, rf.TEXTS)
TEXT_CONTENT = st.one_of(rf.TEXTS, st.lists(TEXT_PART, max_size=3))
_MEDIA_PARTS = st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=3)
_WITH_IMAGE = st.builds(
    lambda before, image, after: [*before, image, *after],
    st.lists(TEXT_PART, max_size=1),
    rf.IMAGE_PARTS,
    st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=2),
)
MEDIA_CONTENT = st.one_of(rf.TEXTS, _MEDIA_PARTS, _WITH_IMAGE)
"""Content: a string, a list of up to three text and image parts, or such a list with at least one image."""
_VALUES = st.one_of(st.integers(-5, 10**6), st.booleans(), st.none(), rf.TEXTS, st.lists(st.integers(), max_size=3))
_ARGUMENTS = st.dictionaries(st.sampled_from(("q", "city", "n", "ünï")), _VALUES, max_size=3)
_CALL = st.builds(
    lambda n, a: {"name": n, "arguments": a},
    st.sampled_from(TOOL_NAMES),
    st.one_of(_ARGUMENTS, _ARGUMENTS, st.just('{"q": "verbatim"}')),
)
TOOL_CALLS = st.lists(st.one_of(_CALL, _CALL.map(lambda c: {"type": "function", "function": c})), max_size=2)
TOOL_LISTS = st.one_of(st.none(), st.lists(st.sampled_from(TOOLS), min_size=1, max_size=2, unique_by=str))
_TOOL_ECHO = "<tool_response>\nresult\n</tool_response>"
QWEN3_USER = st.one_of(rf.TEXTS, st.just(_TOOL_ECHO))
QWEN3_ASSISTANT_TEXT = st.one_of(
    rf.TEXTS, st.sampled_from(("<think>\nhidden plan\n</think>\n\nvisible", "pre</think>post", "\n\nleading newlines"))
)
MEDIA_TOOL_CONTENT = st.one_of(rf.TEXTS, st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=2))


@st.composite
def qwen2_vl_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], None, bool, str]:
    """Any roles in any order the template accepts; images anywhere, including system turns."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(MEDIA_CONTENT)})
    for turn in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(MEDIA_CONTENT)})
        if draw(st.integers(0, 3)) > 0 or turn < 1:
            messages.append({"role": "assistant", "content": draw(TEXT_CONTENT)})
        if draw(st.integers(0, 5)) == 0:
            messages.append({"role": "tool", "content": draw(rf.TEXTS)})
    return messages, None, draw(st.booleans()), draw(st.sampled_from(LOSS_MODES))


@st.composite
def qwen3_conversations(
    draw: st.DrawFn, vision: bool, thinking: bool = False
) -> tuple[list[dict[str, Any]], Any, bool, str]:
    """Qwen3 / Qwen3-VL: tools, tool calls, runs of tool responses; reasoning and later systems for qwen3;
    reasoning (as `reasoning_content` or inline `</think>`) and tool-response echoes as queries with `thinking`."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT_CONTENT if vision else rf.TEXTS)})
    for _ in range(draw(st.integers(1, 3))):
        if not vision and draw(st.integers(0, 6)) == 0:
            messages.append({"role": "system", "content": draw(rf.TEXTS)})
        user = st.one_of(MEDIA_CONTENT, st.just(_TOOL_ECHO)) if thinking else MEDIA_CONTENT if vision else QWEN3_USER
        messages.append({"role": "user", "content": draw(user)})
        for _ in range(draw(st.integers(0, 2))):
            messages.append(_assistant(draw, vision and not thinking))
            for _ in range(draw(st.integers(0, 2))):
                messages.append({"role": "tool", "content": draw(MEDIA_TOOL_CONTENT if vision else rf.TEXTS)})
    return messages, draw(TOOL_LISTS), draw(st.booleans()), draw(st.sampled_from(LOSS_MODES))


TOOL_CALLS_ONE = st.one_of(_CALL, _CALL.map(lambda c: {"type": "function", "function": c}))


@st.composite
def llama3_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Any, bool, str]:
    """Llama 3.1: a user message first after the optional system one (the tools go into it), one tool call per
    call turn with no content beside it, tool results, and later system messages."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT_CONTENT)})
    for turn in range(draw(st.integers(1, 3))):
        if turn and draw(st.integers(0, 6)) == 0:
            messages.append({"role": "system", "content": draw(rf.TEXTS)})
        messages.append({"role": "user", "content": draw(TEXT_CONTENT)})
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                messages.append({"role": "assistant", "content": draw(TEXT_CONTENT)})
                continue
            empty = draw(st.sampled_from(("", " ", "\n", None)))
            messages.append({"role": "assistant", "content": empty, "tool_calls": [draw(TOOL_CALLS_ONE)]})
            for _ in range(draw(st.integers(0, 2))):
                messages.append({"role": "tool", "content": draw(TEXT_CONTENT)})
    return messages, draw(TOOL_LISTS), draw(st.booleans()), draw(st.sampled_from(LOSS_MODES))


GEMMA_RESERVED = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
GEMMA_TEXTS = rf.TEXTS.filter(lambda text: not any(token in text for token in GEMMA_RESERVED))
_GEMMA_TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, GEMMA_TEXTS)
_GEMMA_MEDIA = st.lists(st.one_of(_GEMMA_TEXT_PART, rf.IMAGE_PARTS), max_size=3)
_GEMMA_WITH_IMAGE = st.builds(
    lambda before, image, after: [*before, image, *after],
    st.lists(_GEMMA_TEXT_PART, max_size=1),
    rf.IMAGE_PARTS,
    st.lists(st.one_of(_GEMMA_TEXT_PART, rf.IMAGE_PARTS), max_size=2),
)
GEMMA_USER = st.one_of(GEMMA_TEXTS, _GEMMA_MEDIA, _GEMMA_WITH_IMAGE)
GEMMA_MODEL = st.one_of(GEMMA_TEXTS, st.lists(_GEMMA_TEXT_PART, max_size=2), _GEMMA_MEDIA)


@st.composite
def gemma3_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], None, bool, str]:
    """An optional system message (a string or one text part), then user/model turns alternating from a user
    turn, images in both, ending on either role."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        system = draw(GEMMA_TEXTS)
        content = [{"type": "text", "text": system}] if draw(st.booleans()) else system
        messages.append({"role": "system", "content": content})
    for turn in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(GEMMA_USER)})
        if turn < 1 or draw(st.integers(0, 3)) > 0:
            messages.append({"role": "assistant", "content": draw(GEMMA_MODEL)})
        else:
            break
    return messages, None, draw(st.booleans()), draw(st.sampled_from(LOSS_MODES))


def _assistant(draw: st.DrawFn, vision: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": draw(TEXT_CONTENT if vision else QWEN3_ASSISTANT_TEXT)}
    calls = draw(TOOL_CALLS)
    if calls:
        message["tool_calls"] = calls
    if not vision and draw(st.booleans()):
        message["reasoning_content"] = draw(rf.TEXTS)
    return message


def expected_mask(source: str, family: str | None, text: str, loss_on: str, counts: list[int]) -> list[int]:
    """The loss mask from the template string alone: tokens ending inside `assistant\\n` ... `<|im_end|>`
    (for llama3: after the assistant header's blank line, up to and including `<|eot_id|>`)."""
    tokenizer = rf.reference(source, family).tokenizer
    encoded = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    assistant_open, turn_end = TURN_MARKERS.get(source, (ASSISTANT_OPEN, TURN_END))
    spans = []
    for match in re.finditer(re.escape(assistant_open), text):
        end = text.find(turn_end, match.end())
        if end != -1:  # the generation prompt has no end
            spans.append((match.end(), end + len(turn_end)))
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    mask: list[int] = []
    pending = iter(counts)
    for token, (_, token_end) in zip(encoded.ids, encoded.offsets, strict=True):
        if token == image_id:  # placeholders are inputs, never targets, whatever the mode
            mask.extend([0] * next(pending))
            continue
        mask.append(int(loss_on == "all" or any(start < token_end <= end for start, end in spans)))
    return mask


def check_parity(source: str, conversation: tuple[Any, ...], family: str | None = None) -> None:
    messages, tools, add_generation_prompt, loss_on = conversation
    if currently_in_test_context():
        _record_coverage(messages, tools)
    ours = rf.renderer(source, family).render(messages, tools, add_generation_prompt, loss_on=loss_on)
    reference = rf.reference(source, family)
    assert list(ours.token_ids) == reference.render_ids(messages, tools, add_generation_prompt)
    typed = rf.renderer(source, family).adapter.template_messages(ours.messages)
    text = reference.tokenizer.apply_chat_template(
        typed, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    counts = reference.placeholder_counts(ours.messages)
    assert [image.length for image in ours.images] == counts
    assert list(ours.loss_mask) == expected_mask(source, family, text, loss_on, counts)


def _record_coverage(messages: list[dict[str, Any]], tools: Any) -> None:
    """Hypothesis events, shown by --hypothesis-show-statistics: what the generated conversations cover."""
    images = sum(isinstance(p, dict) and p.get("type") == "image" for m in messages for p in m["content"] or ())
    event(f"images: {min(images, 2)}{'+' if images > 1 else ''}")
    replies = sum(m["role"] == "assistant" for m in messages)
    event(f"assistant turns: {min(replies, 2)}{'+' if replies > 1 else ''}")
    for feature, present in (
        ("system", messages[0]["role"] == "system"),
        ("tools", bool(tools)),
        ("tool calls", any(m.get("tool_calls") for m in messages)),
        ("tool messages", any(m["role"] == "tool" for m in messages)),
        ("reasoning", any("reasoning_content" in m for m in messages)),
    ):
        if present:
            event(feature)


@rf.PARITY
@given(conversation=qwen2_vl_conversations())
def test_qwen2_vl_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen2_vl", conversation)


@rf.PARITY
@given(conversation=qwen2_vl_conversations())
def test_qwen2_5_vl_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen2_5_vl", conversation)


@rf.PARITY
@given(conversation=qwen3_conversations(vision=True))
def test_qwen3_vl_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen3_vl", conversation)


@rf.PARITY
@given(conversation=qwen3_conversations(vision=True, thinking=True))
def test_qwen3_vl_thinking_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen3_vl_thinking", conversation)


@rf.PARITY
@given(conversation=qwen3_conversations(vision=False))
def test_qwen3_matches_template(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen3", conversation)


@rf.PARITY
@given(conversation=llama3_conversations())
def test_llama3_matches_template(conversation: tuple[Any, ...]) -> None:
    check_parity("llama3", conversation)


def test_llama3_writes_one_bos_although_its_tokenizer_adds_one_when_encoding() -> None:
    renderer = rf.renderer("llama3")
    bos = renderer.tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    text = renderer.template_text([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert renderer.tokenizer(text)["input_ids"][:2] == [bos, bos]  # what encoding the template text naively gives
    rendered = renderer.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert rendered.token_ids[0] == bos and rendered.token_ids.count(bos) == 1
    reference = rf.reference("llama3").render_ids([{"role": "user", "content": "hi"}], None, True)
    assert list(rendered.token_ids) == reference


def gemma3_expected(conversation: tuple[Any, ...]) -> tuple[list[int], list[int]]:
    """Ids from Gemma3Processor.apply_chat_template (images as PIL parts), and the loss mask from its expanded
    text: tokens ending inside `<start_of_turn>model\n` ... `<end_of_turn>`, except those whose last character
    the processor's image expansion wrote; placeholders never."""
    messages, _, add_generation_prompt, loss_on = conversation
    processor = rf.gemma3_processor()
    typed = rf.renderer("gemma3").adapter.template_messages(parse_messages(messages))
    pictures = iter(rf.load_pool_image(part.image) for m in parse_messages(messages) for part in m.images())
    for message in typed:
        if isinstance(message["content"], list):
            parts = message["content"]
            message["content"] = [dict(p, image=next(pictures)) if p["type"] == "image" else p for p in parts]
    ids = processor.apply_chat_template(
        typed, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )["input_ids"][0]
    text = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=False)
    expanded = text.replace("<start_of_image>", processor.full_image_sequence)
    encoded = processor.tokenizer.backend_tokenizer.encode(expanded, add_special_tokens=False)
    assert encoded.ids == list(ids)  # the processor tokenizes exactly the expanded template string
    images = [m.span() for m in re.finditer(re.escape(processor.full_image_sequence), expanded)]
    spans = []
    for match in re.finditer(re.escape("<start_of_turn>model\n"), expanded):
        end = expanded.find("<end_of_turn>", match.end())
        if end != -1:
            spans.append((match.end(), end + len("<end_of_turn>")))
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    soft = processor.tokenizer.image_token_id
    mask = []
    for token, (_, end) in zip(encoded.ids, encoded.offsets, strict=True):
        in_image = any(start < end <= stop for start, stop in images)
        trained = any(start < end <= stop for start, stop in spans) and not in_image
        mask.append(0 if token == soft else int(loss_on == "all" or trained))
    return list(ids), mask


@rf.PARITY
@given(conversation=gemma3_conversations())
def test_gemma3_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    messages, tools, add_generation_prompt, loss_on = conversation
    if currently_in_test_context():
        _record_coverage(messages, tools)
    renderer = rf.renderer("gemma3")
    ours = renderer.render(messages, tools, add_generation_prompt, loss_on=loss_on)
    ids, mask = gemma3_expected(conversation)
    assert list(ours.token_ids) == ids
    assert list(ours.loss_mask) == mask
    tokens = rf.gemma3_processor().image_seq_length
    assert [image.length for image in ours.images] == [tokens] * sum(len(m.images()) for m in ours.messages)


@rf.PARITY_GENERIC
@given(conversation=qwen2_vl_conversations())
def test_generic_expands_images_like_the_processor(conversation: tuple[Any, ...]) -> None:
    check_parity("qwen2_5_vl", conversation, family="generic")


@pytest.mark.parametrize("case", range(5))
def test_gemma3_edge_cases_match(case: int) -> None:
    image = {"type": "image", "image": rf.image_source(0, "pil")}
    cases = [
        [{"role": "user", "content": ""}],
        [
            {"role": "system", "content": "\n"},
            {"role": "user", "content": "\n\n"},
            {"role": "assistant", "content": " "},
        ],
        [{"role": "user", "content": [image, image, image]}, {"role": "assistant", "content": [image]}],
        [
            {"role": "system", "content": " keep "},
            {"role": "user", "content": [image, {"type": "text", "text": " b "}]},
        ],
        [{"role": "user", "content": "🙂" * 30}, {"role": "assistant", "content": "\u00a0\u2003 \t"}],
    ]
    for loss_on in ("assistant", "all"):
        conversation = (cases[case], None, True, loss_on)
        ours = rf.renderer("gemma3").render(cases[case], add_generation_prompt=True, loss_on=loss_on)
        assert (list(ours.token_ids), list(ours.loss_mask)) == gemma3_expected(conversation)


@pytest.mark.parametrize("source", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_thinking", "qwen3", "llama3"])
@pytest.mark.parametrize("case", range(6))
def test_hand_written_edge_cases_match(source: str, case: int) -> None:
    image = {"type": "image", "image": rf.image_source(0, "pil")}
    vision = source not in ("qwen3", "llama3")
    cases = [
        ([{"role": "user", "content": ""}], None, True),
        ([{"role": "user", "content": []}, {"role": "assistant", "content": ""}], None, False),
        (
            [
                {"role": "system", "content": "\n"},
                {"role": "user", "content": "\n\n"},
                {"role": "assistant", "content": "\n"},
            ],
            None,
            True,
        ),
        (
            [
                {"role": "user", "content": [image, image, image] if vision else "x"},
                {"role": "assistant", "content": " "},
            ],
            None,
            False,
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, image, {"type": "text", "text": "b"}]
                    if vision
                    else "ab",
                }
            ],
            None,
            True,
        ),
        ([{"role": "user", "content": "🙂" * 30}, {"role": "assistant", "content": "\u00a0\u2003 \t"}], None, True),
    ]
    messages, tools, add_generation_prompt = cases[case]
    check_parity(source, (messages, tools, add_generation_prompt, "assistant"))


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_qwen3_generation_prompt_follows_enable_thinking(enable_thinking: bool) -> None:
    renderer = rf.renderer("qwen3", enable_thinking=enable_thinking)
    messages = [{"role": "user", "content": "hi"}]
    reference = rf.reference("qwen3", enable_thinking=enable_thinking)
    assert list(renderer.render(messages, add_generation_prompt=True).token_ids) == reference.render_ids(
        messages, None, True
    )
    assert ("<think>" in renderer.template_text(messages, add_generation_prompt=True)) is not enable_thinking
