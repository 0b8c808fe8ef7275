"""InternVL 3.5 (`internvl`): tiling layout against the real GOT-OCR2 image processor, token parity with the tiny
template through the real InternVLProcessor, refusals, detection and completion parsing."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.renderers.errors import ContractError, UnknownFamily
from foveal.renderers.layout import InternVLLayoutSpec, compute_layout, spec_from_image_processor, with_pixel_bounds
from foveal.renderers.messages import InvalidMessage, parse_messages
from foveal.renderers.tiny import VLM_FAMILIES, build_tiny_processor

import rendering_fixtures as rf

RESERVED = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")


def _image_processor(backend: str = "pil", **kwargs: Any) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(build_tiny_processor("internvl"), backend=backend, **kwargs)


def _sizes(seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    sizes = [(rng.randint(1, 60), rng.randint(1, 60)) for _ in range(300)]
    sizes += [(rng.randint(1, 5000), rng.randint(1, 5000)) for _ in range(500)]
    sizes += [(c * k, r * k) for c in range(1, 13) for r in range(1, 13) for k in (1, 7, 28)]  # exact ratio ties
    sizes += [(rng.randint(1, 20000), rng.randint(1, 200)) for _ in range(100)]
    sizes += [(rng.randint(1, 200), rng.randint(1, 20000)) for _ in range(100)]
    return sizes


@pytest.mark.parametrize(
    ("tile", "min_tiles", "max_tiles"), [(28, 1, 12), (448, 1, 12), (448, 1, 6), (28, 2, 9), (448, 1, 1), (28, 5, 3)]
)
def test_tile_count_equals_the_real_image_processor_on_1400_sizes(tile: int, min_tiles: int, max_tiles: int) -> None:
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    size = {"height": tile, "width": tile}
    processor = _image_processor(size=size, min_patches=min_tiles, max_patches=max_tiles)
    spec = spec_from_image_processor(processor, "internvl", {"image_seq_length": 4})
    sizes = _sizes(tile * 100 + min_tiles * 10 + max_tiles)
    assert len(sizes) >= 1000
    for width, height in sizes:
        layout = compute_layout(spec, width, height)
        tiles = processor.get_number_of_image_patches(height, width, {"crop_to_patches": True})
        assert layout.image_grid_thw == (tiles, 2, 2) and layout.num_placeholder_tokens == 4 * tiles, (width, height)
        if max_tiles > 1:
            columns, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
            assert layout.tile_grid == (rows, columns), (width, height)
            assert layout.resized == (rows * tile, columns * tile)


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
def test_tiles_equal_the_real_processor_on_real_images(backend: str) -> None:
    from PIL import Image

    processor = _image_processor(backend)
    spec = spec_from_image_processor(processor, "internvl", {"image_seq_length": 4})
    for width, height in ((28, 28), (5, 90), (90, 5), (1, 30), (300, 29), (123, 77), (640, 480), (1000, 10), (56, 28)):
        layout = compute_layout(spec, width, height)
        out = processor(images=[Image.new("RGB", (width, height))], crop_to_patches=True)
        assert int(out["num_patches"][0]) == layout.image_grid_thw[0] == len(out["pixel_values"]), (width, height)


@rf.NEEDS_TORCH
def test_the_full_processor_writes_one_framed_run_of_tiles_times_seq_length() -> None:
    from PIL import Image

    processor = rf.internvl_processor()
    renderer = rf.renderer("internvl")
    for width, height in ((28, 28), (100, 40), (37, 211)):
        image = Image.new("RGB", (width, height))
        batch = processor(text="a<IMG_CONTEXT>b", images=[image])
        ids = list(batch["input_ids"][0])
        layout = compute_layout(renderer.images.spec, width, height)
        count = ids.count(processor.image_token_id)
        assert count == layout.num_placeholder_tokens == processor.image_seq_length * layout.image_grid_thw[0]
        start = ids.index(processor.start_image_token_id)
        assert ids[start + 1 + count] == processor.end_image_token_id


def test_spec_reads_tiles_and_seq_length_and_refuses_other_processors_and_pixel_bounds() -> None:
    spec = spec_from_image_processor(_image_processor(), "internvl", {"image_seq_length": 4})
    assert spec == InternVLLayoutSpec("internvl", 28, 28, 1, 12, 4)
    assert spec_from_image_processor(_image_processor(), "internvl").tokens_per_tile == 256  # processor default
    assert spec.fingerprint != InternVLLayoutSpec("internvl", 28, 28, 1, 6, 4).fingerprint
    with pytest.raises(ContractError, match="image_processor"):
        spec_from_image_processor(_image_processor(), "qwen2_vl")
    with pytest.raises(ContractError, match="tokens_per_tile"):
        InternVLLayoutSpec("internvl", 28, 28, 1, 12, 5)
    with pytest.raises(ContractError, match="max_pixels"):
        with_pixel_bounds(spec, None, 1000)
    assert with_pixel_bounds(spec, None, None) is spec


def test_descriptor_payload_records_tiles_and_the_tile_grid() -> None:
    renderer = rf.renderer("internvl")
    content = [{"type": "image", "image": rf.pool_image(2)}, {"type": "text", "text": "Q"}]
    messages = [{"role": "user", "content": content}]
    rendered = renderer.render(messages, add_generation_prompt=True)
    (image,) = rendered.images
    assert image.descriptor.family == "internvl"
    payload = {"image_grid_thw": [11, 2, 2], "num_placeholder_tokens": 44, "tile_grid": [1, 10]}
    assert image.descriptor.payload == payload
    assert image.length == 44
    again = renderer.render([{"role": "user", "content": [{"type": "image", "image": image.descriptor}]}])
    assert again.images[0].descriptor == image.descriptor


def _text() -> st.SearchStrategy[str]:
    return rf.TEXTS.filter(lambda text: not any(token in text for token in RESERVED))


TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, _text())
WITH_IMAGES = st.one_of(_text(), st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=3))
PLAIN = st.one_of(_text(), st.lists(TEXT_PART, max_size=2))


@st.composite
def internvl_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, str]:
    """System turns anywhere (images allowed), user turns with images, assistant turns (some with `<think>`)."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(WITH_IMAGES)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(WITH_IMAGES)})
        if draw(st.integers(0, 4)) == 0:
            messages.append({"role": "system", "content": draw(PLAIN)})
        if draw(st.integers(0, 3)) > 0:
            think = st.sampled_from(("<think>\nplan\n</think>\n\nanswer", "<think></think>x"))
            messages.append({"role": "assistant", "content": draw(st.one_of(PLAIN, think))})
    loss_on = draw(st.sampled_from(("assistant", "assistant", "last_assistant", "all")))
    return messages, draw(st.booleans()), loss_on


def internvl_expected(messages: list[dict[str, Any]], add_generation_prompt: bool, loss_on: str) -> tuple[list, list]:
    """Ids from the real InternVLProcessor's apply_chat_template on the tiny template (images as PIL parts); the
    mask from its expanded text: tokens ending inside an assistant turn's content or its `<|im_end|>`."""
    processor = rf.internvl_processor()
    typed = rf.renderer("internvl").adapter.template_messages(parse_messages(messages))
    pictures = [rf.load_pool_image(part.image) for m in parse_messages(messages) for part in m.images()]
    tiles = [processor.image_processor.get_number_of_image_patches(p.height, p.width, {"crop_to_patches": True})
             for p in pictures]  # fmt: skip
    pictures = iter(pictures)
    for message in typed:
        if isinstance(message["content"], list):
            parts = message["content"]
            message["content"] = [dict(p, image=next(pictures)) if p["type"] == "image" else p for p in parts]
    batch = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=True,
                                          return_dict=True)  # fmt: skip
    ids = list(batch["input_ids"][0])
    text = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=False)
    counts = iter(n * processor.image_seq_length for n in tiles)
    expanded = re.sub(re.escape("<IMG_CONTEXT>"), lambda _: "<img>" + "<IMG_CONTEXT>" * next(counts) + "</img>", text)
    encoded = processor.tokenizer.backend_tokenizer.encode(expanded, add_special_tokens=False)
    assert encoded.ids == ids
    spans = [m.span(1) for m in re.finditer(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", expanded, re.DOTALL)]
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    image = processor.image_token_id
    mask = []
    for token, (_, end) in zip(encoded.ids, encoded.offsets, strict=True):
        trained = any(start < end <= stop for start, stop in spans)
        mask.append(0 if token == image else int(loss_on == "all" or trained))
    return ids, mask


@rf.NEEDS_TORCH
@rf.PARITY
@given(conversation=internvl_conversations())
def test_internvl_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    messages, add_generation_prompt, loss_on = conversation
    ours = rf.renderer("internvl").render(messages, None, add_generation_prompt, loss_on=loss_on)
    ids, mask = internvl_expected(messages, add_generation_prompt, loss_on)
    assert list(ours.token_ids) == ids
    assert list(ours.loss_mask) == mask


def test_published_shape_and_message_indices() -> None:
    renderer = rf.renderer("internvl")
    messages = [
        {"role": "user", "content": [{"type": "image", "image": rf.pool_image(0)}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "A"},
    ]
    text = renderer.template_text(messages, add_generation_prompt=False)
    assert text == "<|im_start|>user\n<IMG_CONTEXT>\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    rendered = renderer.render(messages, add_generation_prompt=True)
    assert rendered.message_indices[0] == 0 and rendered.message_indices[-1] == len(messages)
    assert -1 not in list(rendered.message_indices)  # no default system turn


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
        ([{"role": "assistant", "content": "a", "reasoning_content": "x"}], None, "messages[0].reasoning_content"),
    ],
)  # fmt: skip
def test_content_the_template_drops_is_refused_naming_the_field(messages: Any, tools: Any, field: str) -> None:
    with pytest.raises(InvalidMessage) as error:
        rf.renderer("internvl").render(messages, tools)
    assert error.value.field == field


@pytest.mark.parametrize("text", ["<IMG_CONTEXT>", "a<img>", "</img>b", "<video>"])
def test_image_tokens_inside_text_are_refused(text: str) -> None:
    with pytest.raises(Exception, match="placeholder|image"):
        rf.renderer("internvl").render([{"role": "user", "content": text}])


@pytest.mark.parametrize(
    ("sampled", "content"),
    [("plain answer<|im_end|>", "plain answer"), ("<think>\nr\n</think>\n\nx<|im_end|>", "<think>\nr\n</think>\n\nx")],
)
def test_completions_parse_as_plain_text(sampled: str, content: str) -> None:
    renderer = rf.renderer("internvl")
    parsed = renderer.parse_completion(renderer.tokenizer.encode(sampled, add_special_tokens=False))
    assert (parsed.content, parsed.reasoning_content, parsed.tool_calls) == (content, None, ())


def test_detection_picks_internvl_and_other_families_are_refused_for_its_template() -> None:
    assert rf.renderer("internvl").adapter.name == "internvl"
    for source, family in (("internvl", "qwen2_vl"), ("internvl", "gemma3"), ("qwen2_5_vl", "internvl")):
        with pytest.raises(UnknownFamily):
            rf.renderer(source, family)


def test_internvl_is_a_trained_and_served_family() -> None:
    assert "internvl" in VLM_FAMILIES
