"""GLM-4.1V (`glm4v`): layout against the real Glm4vImageProcessor, token parity with the tiny template through the
real Glm4vProcessor, refusals, detection and completion parsing."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.renderers.errors import ImageRejected, UnknownFamily
from foveal.renderers.layout import compute_layout, spec_from_image_processor
from foveal.renderers.messages import InvalidMessage, parse_messages
from foveal.renderers.tiny import VLM_FAMILIES, build_tiny_processor

import rendering_fixtures as rf


def _image_processor(**kwargs: Any) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(build_tiny_processor("glm4v"), backend="pil", **kwargs)


def _hf_layout(processor: Any, width: int, height: int) -> tuple[tuple[int, int], int] | None:
    from transformers.models.glm4v.image_processing_glm4v import smart_resize

    try:
        resized = smart_resize(2, height, width, 2, 28, processor.size["shortest_edge"], processor.size["longest_edge"])
    except (ValueError, ZeroDivisionError):
        return None
    return resized, processor.get_number_of_image_patches(height, width, {})


def _ours(spec: Any, width: int, height: int) -> tuple[tuple[int, int], int] | None:
    try:
        layout = compute_layout(spec, width, height)
    except ImageRejected:
        return None
    return layout.resized, layout.num_patches


@rf.NEEDS_TORCH
@pytest.mark.parametrize("bounds", [None, (112 * 112, 28 * 28 * 15000), (12544, 47040000), (3136, 2 * 64 * 784)])
def test_layout_equals_the_real_processor_rule_on_1200_sizes(bounds: tuple[int, int] | None) -> None:
    size = None if bounds is None else {"shortest_edge": bounds[0], "longest_edge": bounds[1]}
    processor = _image_processor() if size is None else _image_processor(size=size)
    spec = spec_from_image_processor(processor, "glm4v")
    rng = random.Random(1234)
    sizes = [(rng.randint(1, 60), rng.randint(1, 60)) for _ in range(300)]  # below the factor: GLM's upscale
    sizes += [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(500)]
    sizes += [(s, 200 * s + d) for s in range(1, 40) for d in (-2, 0, 2)]  # near the aspect limit
    sizes += [(200 * s + d, s) for s in range(1, 40) for d in (-2, 0, 2)]
    sizes += [(rng.randint(1, 30000), rng.randint(1, 300)) for _ in range(166)]
    assert len(sizes) >= 1000
    for width, height in sizes:
        assert _ours(spec, width, height) == _hf_layout(processor, width, height), (width, height)


def test_layout_grid_equals_the_real_processor_on_real_images() -> None:
    from PIL import Image

    processor = _image_processor()
    spec = spec_from_image_processor(processor, "glm4v")
    for width, height in ((28, 28), (5, 90), (90, 5), (1, 30), (300, 29), (123, 77), (640, 480), (1000, 10)):
        layout = compute_layout(spec, width, height)
        grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="np")["image_grid_thw"]
        assert [int(v) for v in grid[0]] == list(layout.image_grid_thw)


def test_spec_reads_size_bounds_and_the_glm_processor_only() -> None:
    spec = spec_from_image_processor(_image_processor(), "glm4v")
    assert (spec.patch_size, spec.merge_size, spec.temporal_patch_size) == (14, 2, 2)
    assert (spec.min_pixels, spec.max_pixels) == (112 * 112, 2 * 256 * 28 * 28)
    with pytest.raises(Exception, match="image_processor"):
        spec_from_image_processor(_image_processor(), "qwen2_vl")


GLM_IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"
TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, rf.TEXTS)
USER_CONTENT = st.one_of(rf.TEXTS, st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=3))
PLAIN = st.one_of(rf.TEXTS, st.lists(TEXT_PART, max_size=2))
SAMPLED = ("<think>plan</think><answer>4</answer>", "<think>\nx\n</think>y")
ASSISTANT_TEXT = st.one_of(rf.TEXTS, st.sampled_from(SAMPLED))


@st.composite
def glm4v_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, str]:
    """System (anywhere, string or text parts), user turns with images, assistant turns with or without reasoning."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(PLAIN)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(USER_CONTENT)})
        if draw(st.integers(0, 3)) == 0:
            messages.append({"role": "system", "content": draw(rf.TEXTS)})
        if draw(st.integers(0, 3)) > 0:
            reply: dict[str, Any] = {"role": "assistant", "content": draw(st.one_of(ASSISTANT_TEXT, PLAIN))}
            if draw(st.booleans()):
                reply["reasoning_content"] = draw(rf.TEXTS.filter(lambda t: "</think>" not in t))
            messages.append(reply)
    loss_on = draw(st.sampled_from(("assistant", "assistant", "last_assistant", "all")))
    return messages, draw(st.booleans()), loss_on


def glm4v_expected(messages: list[dict[str, Any]], add_generation_prompt: bool, loss_on: str) -> tuple[list, list]:
    """Ids from the real Glm4vProcessor's apply_chat_template on the tiny template (images as PIL parts); the mask
    from its expanded text: tokens ending inside an assistant turn's content (after `<|assistant|>\\n`, up to the
    next role token or the end)."""
    processor = rf.glm4v_processor()
    typed = rf.renderer("glm4v").adapter.template_messages(parse_messages(messages))
    pictures = iter(rf.load_pool_image(part.image) for m in parse_messages(messages) for part in m.images())
    for message in typed:
        if isinstance(message["content"], list):
            parts = message["content"]
            message["content"] = [dict(p, image=next(pictures)) if p["type"] == "image" else p for p in parts]
    batch = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=True,
                                          return_dict=True)  # fmt: skip
    ids = list(batch["input_ids"][0])
    text = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=False)
    counts = iter(int(grid.prod()) // 4 for grid in batch.get("image_grid_thw", []))
    expanded = re.sub(re.escape("<|image|>"), lambda _: "<|image|>" * next(counts), text)
    encoded = processor.tokenizer.backend_tokenizer.encode(expanded, add_special_tokens=False)
    assert encoded.ids == ids
    spans = []
    for match in re.finditer(re.escape("<|assistant|>\n"), expanded):
        following = re.search(r"<\|(system|user|assistant)\|>", expanded[match.end():])
        end = match.end() + following.start() if following else len(expanded)
        spans.append((match.end(), end))
    if add_generation_prompt and spans:
        spans.pop()  # the generation prompt
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    image = processor.image_token_id
    mask = []
    for token, (_, end) in zip(encoded.ids, encoded.offsets, strict=True):
        trained = any(start < end <= stop for start, stop in spans)
        mask.append(0 if token == image else int(loss_on == "all" or trained))
    return ids, mask


@rf.NEEDS_TORCH
@rf.PARITY
@given(conversation=glm4v_conversations())
def test_glm4v_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    messages, add_generation_prompt, loss_on = conversation
    ours = rf.renderer("glm4v").render(messages, None, add_generation_prompt, loss_on=loss_on)
    ids, mask = glm4v_expected(messages, add_generation_prompt, loss_on)
    assert list(ours.token_ids) == ids
    assert list(ours.loss_mask) == mask


def test_published_shape_of_a_thinking_turn_and_the_generation_prompt() -> None:
    renderer = rf.renderer("glm4v")
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "image", "image": rf.pool_image(0)}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "<answer>A</answer>", "reasoning_content": "r"},
        {"role": "user", "content": "U"},
    ]
    text = renderer.template_text(messages, add_generation_prompt=True)
    assert text == (
        "[gMASK]<sop><|system|>\nS<|user|>\n" + GLM_IMAGE + "Q<|assistant|>\n<think>r</think><answer>A</answer>"
        "<|user|>\nU<|assistant|>\n"
    )
    rendered = renderer.render(messages, add_generation_prompt=True)
    assert list(rendered.message_indices[:2]) == [-1, -1] and rendered.message_indices[-1] == len(messages)
    assert rendered.images[0].descriptor.family == "glm4v"


@pytest.mark.parametrize(
    ("messages", "tools", "field"),
    [
        ([{"role": "user", "content": "q"}], [{"type": "function", "function": {"name": "f"}}], "tools"),
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], None, "messages[1].role"),
        (
            [{"role": "user", "content": "q"},
             {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]}],
            None,
            "messages[1].tool_calls",
        ),
        ([{"role": "assistant", "content": "a", "reasoning_content": "x</think>y"}], None,
         "messages[0].reasoning_content"),
        ([{"role": "assistant", "content": [{"type": "image", "image": b"x"}]}], None, "messages[0].content"),
    ],
)  # fmt: skip
def test_content_the_template_drops_is_refused_naming_the_field(messages: Any, tools: Any, field: str) -> None:
    with pytest.raises(InvalidMessage) as error:
        rf.renderer("glm4v").render(messages, tools)
    assert error.value.field == field


@pytest.mark.parametrize("text", ["<|image|>", "a<|begin_of_image|>", "<|video|>", "<|end_of_image|>b"])
def test_image_tokens_inside_text_are_refused(text: str) -> None:
    with pytest.raises(Exception, match="placeholder|image"):
        rf.renderer("glm4v").render([{"role": "user", "content": text}])


@pytest.mark.parametrize(
    ("sampled", "reasoning", "content"),
    [
        ("<think>plan</think><answer>4</answer>", "plan", "<answer>4</answer>"),
        ("<think>\ncut off", "\ncut off", ""),
        ("plain answer", None, "plain answer"),
        ("<think></think>x\n", "", "x\n"),
    ],
)
def test_completions_split_reasoning_verbatim_and_round_trip(sampled: str, reasoning: Any, content: str) -> None:
    renderer = rf.renderer("glm4v")
    ids = renderer.tokenizer.encode(sampled, add_special_tokens=False)
    parsed = renderer.parse_completion(ids)
    assert (parsed.reasoning_content, parsed.content, parsed.tool_calls) == (reasoning, content, ())
    if "</think>" in sampled or reasoning is None:
        prompt = [{"role": "user", "content": "q"}]
        text = renderer.template_text([*prompt, parsed], add_generation_prompt=False)
        assert text.endswith("<|assistant|>\n" + sampled)


def test_detection_picks_glm4v_and_other_families_are_refused_for_its_template() -> None:
    assert rf.renderer("glm4v").adapter.name == "glm4v"
    for source, family in (("glm4v", "qwen2_vl"), ("glm4v", "gemma3"), ("qwen2_5_vl", "glm4v")):
        with pytest.raises(UnknownFamily):
            rf.renderer(source, family)


def test_glm4v_is_a_trained_and_served_family() -> None:
    assert "glm4v" in VLM_FAMILIES
