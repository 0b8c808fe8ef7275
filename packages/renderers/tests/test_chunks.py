"""Tinker-shaped ModelInput: JSON round trips, image chunks rendered like the template, checked counts."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.chunks import EncodedTextChunk, ImageAssetPointerChunk, ImageChunk, ModelInput
from foveal.renderers.errors import DisallowedLocation, ImageRejected, PlaceholderMismatch, UnknownFamily

import rendering_fixtures as rf

TOKENS = st.lists(st.integers(0, 2**31 - 1), max_size=8).map(tuple)
CHUNKS = st.lists(
    st.one_of(
        st.builds(EncodedTextChunk, tokens=TOKENS),
        st.builds(ImageChunk, data=st.binary(max_size=64), format=st.sampled_from(("png", "jpeg")),
                  expected_tokens=st.one_of(st.none(), st.integers(0, 10**6))),
        st.builds(ImageAssetPointerChunk, location=st.text(max_size=30), format=st.sampled_from(("png", "jpeg")),
                  expected_tokens=st.one_of(st.none(), st.integers(0, 10**6))),
    ),
    max_size=5,
)  # fmt: skip


@settings(rf.PARITY, max_examples=100)
@given(chunks=CHUNKS)
def test_model_input_round_trips_through_json_with_bytes_as_base64(chunks: list) -> None:
    model_input = ModelInput(chunks=tuple(chunks))
    wire = model_input.model_dump_json()
    assert ModelInput.model_validate_json(wire) == model_input
    for chunk, raw in zip(chunks, orjson.loads(wire)["chunks"], strict=True):
        assert raw["type"] == chunk.type
        if isinstance(chunk, ImageChunk):
            assert base64.b64decode(raw["data"]) == chunk.data


def ids(source: str, text: str) -> tuple[int, ...]:
    return tuple(rf.renderer(source).tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("source", ["qwen2_5_vl", "qwen3_vl"])
def test_image_chunk_renders_like_the_template_writes_an_image(source: str) -> None:
    renderer = rf.renderer(source)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": rf.image_source(5, "png_bytes")}, {"type": "text", "text": "hi"}],
        }
    ]
    expected = renderer.render(messages, add_generation_prompt=True)
    start = expected.images[0].offset - 1  # the <|vision_start|> the template writes
    chunks = (
        EncodedTextChunk(tokens=expected.token_ids[:start]),
        ImageChunk(data=rf.encoded(5, "PNG"), format="png", expected_tokens=expected.images[0].length),
        EncodedTextChunk(tokens=expected.token_ids[start + expected.images[0].length + 2 :]),
    )
    rendered = renderer.render_model_input(ModelInput(chunks=chunks))
    assert rendered.token_ids == expected.token_ids
    assert rendered.images == expected.images
    assert not any(rendered.loss_mask)


def test_rendered_conversation_round_trips_through_asset_pointers() -> None:
    renderer = rf.renderer("qwen3_vl")
    image = {"type": "image", "image": rf.image_source(2, "pil")}
    rendered = renderer.render([{"role": "user", "content": [image, image, {"type": "text", "text": "same twice"}]}])
    model_input = renderer.to_model_input(rendered)
    assert [type(c).__name__ for c in model_input.chunks].count("ImageAssetPointerChunk") == 2
    again = renderer.render_model_input(ModelInput.model_validate_json(model_input.model_dump_json()))
    assert again.token_ids == rendered.token_ids
    assert again.images == rendered.images
    assert rendered.images[0].descriptor == rendered.images[1].descriptor  # stored once, de-duplicated


def test_expected_tokens_that_disagree_with_the_layout_name_the_chunk() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    chunks = (
        EncodedTextChunk(tokens=ids("qwen2_5_vl", "look:")),
        ImageChunk(data=rf.encoded(0, "PNG"), format="png", expected_tokens=999),
    )
    with pytest.raises(PlaceholderMismatch) as raised:
        renderer.render_model_input(ModelInput(chunks=chunks))
    assert raised.value.field == "chunks[1].expected_tokens"
    assert raised.value.value == 999


def test_declared_format_must_match_the_bytes() -> None:
    renderer = rf.renderer("qwen2_5_vl")
    with pytest.raises(ImageRejected) as raised:
        renderer.render_model_input(ModelInput(chunks=(ImageChunk(data=rf.encoded(0, "PNG"), format="jpeg"),)))
    assert raised.value.field == "chunks[0].format"


def test_asset_pointers_obey_the_location_rules(tmp_path: Path) -> None:
    renderer = rf.renderer("qwen3_vl")
    outside = tmp_path / "outside.png"
    outside.write_bytes(rf.encoded(0, "PNG"))
    for location in (outside.as_uri(), str(outside), "https://example.com/cat.png"):
        with pytest.raises(DisallowedLocation):
            renderer.render_model_input(ModelInput(chunks=(ImageAssetPointerChunk(location=location, format="png"),)))


def test_text_chunks_may_not_smuggle_placeholder_tokens() -> None:
    renderer = rf.renderer("qwen3_vl")
    pad = renderer.image_token_id
    with pytest.raises(PlaceholderMismatch) as raised:
        renderer.render_model_input(ModelInput(chunks=(EncodedTextChunk(tokens=(pad, pad)),)))
    assert raised.value.field == "token_ids"


def test_text_only_family_refuses_image_chunks() -> None:
    renderer = rf.renderer("qwen3")
    with pytest.raises(UnknownFamily) as raised:
        renderer.render_model_input(ModelInput(chunks=(ImageChunk(data=rf.encoded(0, "PNG"), format="png"),)))
    assert raised.value.field == "chunks[0]"
