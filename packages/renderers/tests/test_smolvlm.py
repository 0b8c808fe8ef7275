"""SmolVLM2 (`smolvlm`): image splitting layout against the real SmolVLM image processor, token parity with the tiny
template through the real SmolVLMProcessor, refusals, detection, completion parsing and the multi-run spans."""

from __future__ import annotations

import importlib.util
import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from foveal.renderers.errors import ContractError, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import SmolVLMLayoutSpec, compute_layout, spec_from_image_processor, with_pixel_bounds
from foveal.renderers.layout.smolvlm import image_block
from foveal.renderers.messages import InvalidMessage, parse_messages
from foveal.renderers.placeholders import pair_images
from foveal.renderers.tiny import VLM_FAMILIES, build_tiny_processor

import rendering_fixtures as rf

RESERVED = ("<image>", "<fake_token_around_image>", "<global-img>", "<video>", "<row_", "<end_of_utterance>")
NEEDS_PROCESSOR = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("num2words") is None,
    reason="SmolVLMProcessor imports torch and needs num2words (trainer dependencies; the workspace run has them)",
)
"""SmolVLMProcessor refuses to start without num2words, a dependency of foveal-trainer, not of foveal-renderers."""


def _image_processor(backend: str = "pil", **kwargs: Any) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(build_tiny_processor("smolvlm"), backend=backend, **kwargs)


def _sizes(seed: int, count: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    sizes = [(1, 1), (1, 400), (400, 1), (2, 97), (97, 2)]
    sizes += [(rng.randint(1, 80), rng.randint(1, 80)) for _ in range(count // 3)]
    sizes += [(rng.randint(1, 400), rng.randint(1, 400)) for _ in range(count // 2)]
    sizes += [(rng.randint(1, 400), rng.randint(1, 12)) for _ in range(count // 12)]
    sizes += [(rng.randint(1, 12), rng.randint(1, 400)) for _ in range(count - len(sizes))]
    return sizes


def _processor_grid(processor: Any, width: int, height: int) -> tuple[tuple[int, int], int]:
    out = processor(images=[[Image.new("RGB", (width, height))]], return_row_col_info=True)
    return (out["rows"][0][0], out["cols"][0][0]), out["pixel_values"].shape[1]


def _check_sizes(processor: Any, spec: SmolVLMLayoutSpec, sizes: list[tuple[int, int]]) -> None:
    for width, height in sizes:
        layout = compute_layout(spec, width, height)
        grid, tiles = _processor_grid(processor, width, height)
        assert layout.tile_grid == grid, (width, height)
        assert layout.image_grid_thw == (tiles, spec.tokens_per_side, spec.tokens_per_side), (width, height)
        assert layout.num_placeholder_tokens == tiles * spec.tokens_per_tile == layout.placeholder_runs * 4


SETTINGS = [(128, 32, True), (96, 28, True), (70, 30, True), (128, 32, False)]


@pytest.mark.parametrize(("longest", "tile", "splitting"), SETTINGS)
def test_tiles_equal_the_pil_image_processor_on_1000_sizes(longest: int, tile: int, splitting: bool) -> None:
    size, max_size = {"longest_edge": longest}, {"longest_edge": tile}
    processor = _image_processor(size=size, max_image_size=max_size, do_image_splitting=splitting)
    spec = spec_from_image_processor(processor, "smolvlm", {"image_seq_len": 4})
    sizes = _sizes(longest * 1000 + tile, 1020)
    assert len(sizes) >= 1000
    _check_sizes(processor, spec, sizes)


@rf.NEEDS_TORCH
@pytest.mark.parametrize(("longest", "tile", "splitting"), SETTINGS[:2])
def test_tiles_equal_smolvlm_image_processor_on_1000_sizes(longest: int, tile: int, splitting: bool) -> None:
    size, max_size = {"longest_edge": longest}, {"longest_edge": tile}
    processor = _image_processor("torchvision", size=size, max_image_size=max_size, do_image_splitting=splitting)
    assert type(processor).__name__ == "SmolVLMImageProcessor"
    spec = spec_from_image_processor(processor, "smolvlm", {"image_seq_len": 4})
    _check_sizes(processor, spec, _sizes(tile, 1010))


@pytest.mark.parametrize(("longest", "tile"), [(1536, 384), (2048, 512)])
def test_tiles_equal_the_image_processor_at_the_released_settings(longest: int, tile: int) -> None:
    processor = _image_processor(size={"longest_edge": longest}, max_image_size={"longest_edge": tile})
    spec = spec_from_image_processor(processor, "smolvlm", {"image_seq_len": 4})
    rng = random.Random(longest)
    sizes = [(640, 480), (480, 640), (1, 300), (5000, 20), (384, 384), (385, 384)]
    sizes += [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(4)]
    _check_sizes(processor, spec, sizes)


def test_spec_reads_the_processor_and_refuses_others_and_pixel_bounds() -> None:
    spec = spec_from_image_processor(_image_processor(), "smolvlm", {"image_seq_len": 4})
    assert spec == SmolVLMLayoutSpec("smolvlm", 128, 32, True, 4)
    assert spec_from_image_processor(_image_processor(), "smolvlm").tokens_per_tile == 169  # processor default
    assert spec.fingerprint != SmolVLMLayoutSpec("smolvlm", 128, 32, False, 4).fingerprint
    with pytest.raises(ContractError, match="image_processor"):
        spec_from_image_processor(_image_processor(), "internvl")
    with pytest.raises(ContractError) as error:
        SmolVLMLayoutSpec("smolvlm", 128, 32, True, 5)
    assert (error.value.field, error.value.value) == ("layout.tokens_per_tile", 5)
    with pytest.raises(ContractError) as error:
        with_pixel_bounds(spec, 1000, None)
    assert (error.value.field, error.value.value) == ("multimodal.min_pixels", 1000)
    assert with_pixel_bounds(spec, None, None) is spec


@NEEDS_PROCESSOR
def test_the_block_is_what_smolvlm_processor_writes() -> None:
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    for rows, columns in ((0, 0), (1, 2), (2, 1), (3, 4), (4, 4), (6, 6)):
        ours = "".join(value * (3 if kind == "run" else 1) for kind, value in image_block(rows, columns))
        theirs = get_image_prompt_string(rows, columns, 3, "<fake_token_around_image>", "<image>", "<global-img>")
        assert ours == theirs


def test_descriptor_payload_records_tiles_grid_and_runs() -> None:
    renderer = rf.renderer("smolvlm")
    content = [{"type": "image", "image": rf.pool_image(3)}, {"type": "text", "text": "Q"}]
    rendered = renderer.render([{"role": "user", "content": content}], add_generation_prompt=True)
    (image,) = rendered.images
    assert image.descriptor.family == "smolvlm"  # 64 x 48 -> 128 x 96 -> 4 x 3 tiles + the global view
    payload = {"image_grid_thw": [13, 2, 2], "num_placeholder_tokens": 52, "tile_grid": [3, 4], "placeholder_runs": 13}
    assert image.descriptor.payload == payload
    assert image.length == 52
    image_id = renderer.image_token_id
    assert rendered.token_ids[image.offset : image.offset + 4] == (image_id,) * 4
    assert list(rendered.token_ids).count(image_id) == 52
    again = renderer.render([{"role": "user", "content": [{"type": "image", "image": image.descriptor}]}])
    assert again.images[0].descriptor == image.descriptor


def test_placeholder_runs_pair_per_image_and_refuse_a_short_or_extra_run() -> None:
    image, other = 9, 1
    tokens = [other, image, image, other, other, image, image, other, image, image, image, image]
    assert pair_images(tokens, image, [4, 4], runs_per_image=[2, 1]) == [(1, 4), (8, 4)]
    with pytest.raises(PlaceholderMismatch) as error:
        pair_images(tokens, image, [6, 4], runs_per_image=[2, 1])
    assert error.value.field == "images[0].span"
    with pytest.raises(PlaceholderMismatch) as error:
        pair_images(tokens, image, [4], runs_per_image=[2])
    assert error.value.field == "token_ids"


def test_tinker_chunks_refuse_a_tiled_block() -> None:
    renderer = rf.renderer("smolvlm")
    rendered = renderer.render([{"role": "user", "content": [{"type": "image", "image": rf.pool_image(0)}]}])
    with pytest.raises(UnknownFamily) as error:
        renderer.to_model_input(rendered)
    assert (error.value.field, error.value.value) == ("images[0].family", "smolvlm")


def _text() -> st.SearchStrategy[str]:
    return rf.TEXTS.filter(lambda text: not any(token in text for token in RESERVED))


TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, _text())
WITH_IMAGES = st.one_of(_text(), st.lists(st.one_of(TEXT_PART, rf.IMAGE_PARTS), max_size=3))
PLAIN = st.one_of(_text(), st.lists(TEXT_PART, max_size=2))


@st.composite
def smolvlm_conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, str]:
    """A system turn or not, user turns with images, assistant turns (now and then with an image), system turns
    between them."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(PLAIN)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(WITH_IMAGES)})
        if draw(st.integers(0, 5)) == 0:
            messages.append({"role": "system", "content": draw(PLAIN)})
        if draw(st.integers(0, 3)) > 0:
            messages.append({"role": "assistant", "content": draw(st.one_of(PLAIN, PLAIN, WITH_IMAGES))})
    loss_on = draw(st.sampled_from(("assistant", "assistant", "last_assistant", "all")))
    return messages, draw(st.booleans()), loss_on


_ASSISTANT = re.compile(r"(?:(?<=<\|im_start\|>)|(?<=<end_of_utterance>\n))Assistant: ?(.*?<end_of_utterance>)", re.S)


def _expand(text: str, grids: list[tuple[int, int]], seq_len: int) -> tuple[str, list[tuple[int, int]]]:
    """SmolVLMProcessor's own expansion of each `<image>`, and where each block lies in the expanded text."""
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    pieces = text.split("<image>")
    assert len(pieces) == len(grids) + 1
    out, blocks = pieces[0], []
    for (rows, columns), piece in zip(grids, pieces[1:], strict=True):
        block = get_image_prompt_string(rows, columns, seq_len, "<fake_token_around_image>", "<image>", "<global-img>")
        blocks.append((len(out), len(out) + len(block)))
        out += block + piece
    return out, blocks


def smolvlm_expected(messages: list[dict[str, Any]], add_generation_prompt: bool, loss_on: str) -> tuple[list, list]:
    """Ids from the real SmolVLMProcessor on the tiny template's text (images as PIL); the mask from the expanded text:
    tokens ending inside an assistant turn's content or its `<end_of_utterance>`, outside the image blocks."""
    processor = rf.smolvlm_processor()
    typed = rf.renderer("smolvlm").adapter.template_messages(parse_messages(messages))
    pictures = [rf.load_pool_image(part.image) for m in parse_messages(messages) for part in m.images()]
    text = processor.apply_chat_template(typed, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids = list(processor(text=text, images=[pictures] if pictures else None)["input_ids"][0])
    grids = []
    if pictures:  # the rows and columns the processor used (it drops them from its own output)
        tiles = processor.image_processor(images=[pictures], return_row_col_info=True)
        grids = list(zip(tiles["rows"][0], tiles["cols"][0], strict=True))
    text, blocks = _expand(text, grids, processor.image_seq_len)
    encoded = processor.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    assert encoded.ids == ids
    spans = [m.span(1) for m in _ASSISTANT.finditer(text)]
    spans = spans[-1:] if loss_on == "last_assistant" else spans
    mask = []
    for token, (_, end) in zip(encoded.ids, encoded.offsets, strict=True):
        trained = any(start < end <= stop for start, stop in spans)
        in_block = any(start < end <= stop for start, stop in blocks)
        mask.append(0 if token == processor.image_token_id else int(loss_on == "all" or (trained and not in_block)))
    return ids, mask


@NEEDS_PROCESSOR
@rf.PARITY
@given(conversation=smolvlm_conversations())
def test_smolvlm_matches_template_and_processor(conversation: tuple[Any, ...]) -> None:
    messages, add_generation_prompt, loss_on = conversation
    ours = rf.renderer("smolvlm").render(messages, None, add_generation_prompt, loss_on=loss_on)
    ids, mask = smolvlm_expected(messages, add_generation_prompt, loss_on)
    assert list(ours.token_ids) == ids
    assert list(ours.loss_mask) == mask


def test_published_shape_and_message_indices() -> None:
    renderer = rf.renderer("smolvlm")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image", "image": rf.pool_image(0)}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "More?"},
    ]
    text = renderer.template_text(messages, add_generation_prompt=True)
    assert text == (
        "<|im_start|>System: Be brief.<end_of_utterance>\nUser:<image>Q<end_of_utterance>\n"
        "Assistant: A<end_of_utterance>\nUser: More?<end_of_utterance>\nAssistant:"
    )
    rendered = renderer.render(messages, add_generation_prompt=True)
    assert rendered.message_indices[0] == -1  # the template's <|im_start|>
    assert rendered.message_indices[-1] == len(messages)
    prompt = [i for i, owner in enumerate(rendered.message_indices) if owner == len(messages)]
    assert renderer.tokenizer.decode([rendered.token_ids[i] for i in prompt]) == "Assistant:"


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
        rf.renderer("smolvlm").render(messages, tools)
    assert error.value.field == field
    assert "smolvlm" in error.value.expected


@pytest.mark.parametrize("text", ["<image>", "a<fake_token_around_image>", "<global-img>b", "<row_2_col_3>", "<video>"])
def test_image_tokens_inside_text_are_refused(text: str) -> None:
    with pytest.raises(PlaceholderMismatch) as error:
        rf.renderer("smolvlm").render([{"role": "user", "content": text}])
    assert error.value.field == "text"


@pytest.mark.parametrize(
    ("sampled", "content"),
    [(" plain answer<end_of_utterance>", "plain answer"), ("no space", "no space"), ("  two", " two")],
)
def test_completions_parse_without_the_space_the_prompt_leaves(sampled: str, content: str) -> None:
    renderer = rf.renderer("smolvlm")
    parsed = renderer.parse_completion(renderer.tokenizer.encode(sampled, add_special_tokens=False))
    assert (parsed.content, parsed.reasoning_content, parsed.tool_calls) == (content, None, ())


def test_a_sampled_turn_renders_back_to_the_same_ids_and_bridges() -> None:
    renderer = rf.renderer("smolvlm")
    content = [{"type": "image", "image": rf.pool_image(1)}, {"type": "text", "text": "Hi"}]
    messages = [{"role": "user", "content": content}]
    prompt = renderer.render(messages, add_generation_prompt=True)
    stop = renderer.stop_token_ids[0]
    sampled = [*renderer.tokenizer.encode(" A red dot.", add_special_tokens=False), stop]
    turn = renderer.append_completion(prompt, sampled)
    assert turn.messages[-1].content == "A red dot."
    assert turn.content_mask == prompt.content_mask + (1,) * (len(sampled) - 1) + (0,)
    full = renderer.render(list(turn.messages))
    assert full.token_ids[: len(turn)] == turn.token_ids  # the full render adds the turn's closing newline
    follow = [{"role": "user", "content": "more"}]
    bridged = renderer.bridge(turn, follow)
    assert bridged.token_ids == renderer.render([*turn.messages, *follow], add_generation_prompt=True).token_ids
    assert renderer.bridge_exact(turn, follow) is not None


def test_detection_picks_smolvlm_and_other_families_are_refused_for_its_template() -> None:
    assert rf.renderer("smolvlm").adapter.name == "smolvlm"
    for source, family in (("smolvlm", "internvl"), ("smolvlm", "gemma3"), ("internvl", "smolvlm")):
        with pytest.raises(UnknownFamily):
            rf.renderer(source, family)


def test_detection_from_a_saved_folder_by_template_alone(tmp_path: Any) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(build_tiny_processor("smolvlm"), folder)
    config = (folder / "tokenizer_config.json").read_text().replace('"processor_class": "SmolVLMProcessor"', '"x": 1')
    (folder / "tokenizer_config.json").write_text(config)
    (folder / "preprocessor_config.json").write_text(
        (folder / "preprocessor_config.json").read_text().replace('"processor_class": "SmolVLMProcessor"', '"x": 1')
    )
    renderer = rf.load_renderer(folder, store=rf.store())
    assert renderer.adapter.name == "smolvlm"
    assert renderer.images.spec == SmolVLMLayoutSpec("smolvlm", 128, 32, True, 4)


def test_smolvlm_is_a_trained_family() -> None:
    assert "smolvlm" in VLM_FAMILIES
