"""Gemma 3's layout: one fixed-size image per image part, read from the real processor files, refused when not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest
import xxhash
from foveal.configs.multimodal import MultimodalConfig
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from foveal.renderers.errors import ContractError
from foveal.renderers.factory import load_renderer
from foveal.renderers.layout import Gemma3LayoutSpec, LayoutSpec, compute_layout, with_pixel_bounds
from foveal.renderers.tiny import build_tiny_processor

import rendering_fixtures as rf


def gemma3_spec(**overrides: object) -> Gemma3LayoutSpec:
    kwargs = {"family": "gemma3", "image_height": 896, "image_width": 896, "tokens_per_image": 256} | overrides
    return Gemma3LayoutSpec(**kwargs)


def test_fingerprint_covers_the_image_size_and_tokens_per_image() -> None:
    canonical = b'{"family":"gemma3","image_height":896,"image_width":896,"pan_and_scan":false,"tokens_per_image":256}'
    assert orjson.dumps(gemma3_spec().settings(), option=orjson.OPT_SORT_KEYS) == canonical
    assert gemma3_spec().fingerprint == xxhash.xxh3_128_hexdigest(canonical)
    changed = [gemma3_spec(image_height=448), gemma3_spec(image_width=448), gemma3_spec(tokens_per_image=64)]
    assert len({spec.fingerprint for spec in [gemma3_spec(), *changed]}) == 4


@settings(max_examples=100, deadline=None)
@given(width=st.integers(1, 20000), height=st.integers(1, 20000))
def test_every_image_size_gives_the_same_256_placeholders(width: int, height: int) -> None:
    layout = compute_layout(gemma3_spec(), width, height)
    assert (layout.resized, layout.image_grid_thw, layout.num_placeholder_tokens) == ((896, 896), (1, 16, 16), 256)
    assert layout.payload() == {"image_grid_thw": [1, 16, 16], "num_placeholder_tokens": 256}


@pytest.mark.parametrize(
    ("field", "value"), [("tokens_per_image", 255), ("tokens_per_image", 0), ("image_height", 896.0)]
)
def test_invalid_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ContractError) as caught:
        gemma3_spec(**{field: value})
    assert caught.value.field == f"layout.{field}"


def test_a_spec_of_another_family_type_is_refused_by_the_layout() -> None:
    with pytest.raises(ContractError) as caught:
        compute_layout(LayoutSpec("gemma3", 14, 4, 1, 896 * 896, 896 * 896), 100, 100)
    assert caught.value.field == "layout"


def test_pixel_bound_overrides_are_refused_for_a_fixed_size_family() -> None:
    assert with_pixel_bounds(gemma3_spec(), None, None) == gemma3_spec()
    with pytest.raises(ContractError) as caught:
        with_pixel_bounds(gemma3_spec(), 3136, None)
    assert caught.value.field == "multimodal.min_pixels"


def test_the_renderer_reads_size_and_tokens_from_the_processor_files() -> None:
    spec = rf.renderer("gemma3").images.spec
    assert spec == gemma3_spec(image_height=56, image_width=56, tokens_per_image=4)
    processor = rf.gemma3_processor()
    for size in rf.IMAGE_SIZES:
        out = processor(text="<start_of_image>", images=[Image.new("RGB", size)], return_tensors="np")
        count = list(out["input_ids"][0]).count(processor.tokenizer.image_token_id)
        assert count == compute_layout(spec, *size).num_placeholder_tokens == 4
        assert out["pixel_values"].shape[-2:] == compute_layout(spec, *size).resized


def edited_copy(tmp_path: Path, filename: str, **changes: object) -> Path:
    folder = tmp_path / "gemma3"
    shutil.copytree(build_tiny_processor("gemma3"), folder)
    path = folder / filename
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return folder


def test_pan_and_scan_turned_on_in_the_processor_config_is_refused(tmp_path: Path) -> None:
    folder = edited_copy(tmp_path, "preprocessor_config.json", do_pan_and_scan=True)
    with pytest.raises(ContractError) as caught:
        load_renderer(folder, store=rf.store())
    assert caught.value.field == "image_processor.do_pan_and_scan"


def test_image_seq_length_comes_from_processor_config_json(tmp_path: Path) -> None:
    folder = edited_copy(tmp_path, "processor_config.json", image_seq_length=9)
    assert load_renderer(folder, store=rf.store()).images.spec.tokens_per_image == 9
    (folder / "processor_config.json").unlink()  # Gemma3Processor's own default then
    assert load_renderer(folder, store=rf.store()).images.spec.tokens_per_image == 256


def test_multimodal_pixel_bounds_are_refused_for_gemma3() -> None:
    with pytest.raises(ContractError) as caught:
        folder = build_tiny_processor("gemma3")
        load_renderer(folder, store=rf.store(), multimodal=MultimodalConfig(max_pixels=10**6))
    assert caught.value.field == "multimodal.max_pixels"
