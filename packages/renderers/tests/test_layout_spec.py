"""LayoutSpec, its fingerprint, the family registry and compute_layout's input checks (no HF here)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.errors import ContractError, ImageRejected, UnknownFamily
from foveal.renderers.layout import (
    LayoutSpec,
    compute_layout,
    family_names,
    layout_family,
    with_pixel_bounds,
)

QWEN_FAMILIES = ("qwen2_vl", "qwen3_vl")
"""The families whose settings are a `LayoutSpec` (gemma3 has its own spec: test_layout_gemma3.py)."""
SETTINGS = ("family", "patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels")


@st.composite
def spec_kwargs(draw: st.DrawFn) -> dict:
    min_pixels = draw(st.integers(1, 10**7))
    return {
        "family": draw(st.sampled_from(QWEN_FAMILIES)),
        "patch_size": draw(st.integers(1, 64)),
        "merge_size": draw(st.integers(1, 4)),
        "temporal_patch_size": draw(st.integers(1, 4)),
        "min_pixels": min_pixels,
        "max_pixels": draw(st.integers(min_pixels, 10**8)),
    }


def qwen2_spec(**overrides: object) -> LayoutSpec:
    kwargs = {"family": "qwen2_vl", "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    kwargs |= {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280} | overrides
    return LayoutSpec(**kwargs)


@settings(max_examples=100, deadline=None)
@given(kwargs=spec_kwargs())
def test_equal_settings_give_equal_fingerprints(kwargs: dict) -> None:
    first, second = LayoutSpec(**kwargs), LayoutSpec(**dict(kwargs))
    assert first == second and hash(first) == hash(second)
    assert first.fingerprint == second.fingerprint


@settings(max_examples=150, deadline=None)
@given(kwargs=spec_kwargs(), name=st.sampled_from(SETTINGS), data=st.data())
def test_changing_any_setting_changes_the_fingerprint(kwargs: dict, name: str, data: st.DataObject) -> None:
    changed = dict(kwargs)
    if name == "family":
        changed["family"] = data.draw(st.text(min_size=1).filter(lambda f: f != kwargs["family"]))
    elif name == "min_pixels" and kwargs["min_pixels"] == kwargs["max_pixels"]:
        changed["min_pixels"] -= 1 if kwargs["min_pixels"] > 1 else -1
        changed["max_pixels"] = max(changed["max_pixels"], changed["min_pixels"])
    else:
        changed[name] += 1
    assert LayoutSpec(**changed).fingerprint != LayoutSpec(**kwargs).fingerprint


def test_fingerprint_is_xxh3_128_of_the_sorted_compact_settings_json() -> None:
    """Golden regression value: changing it orphans every stored descriptor, so change it only on purpose."""
    canonical = (
        b'{"family":"qwen2_vl","max_pixels":1003520,"merge_size":2,'
        b'"min_pixels":3136,"patch_size":14,"temporal_patch_size":2}'
    )
    golden = "00cd0443d2809d5d0820ea6ce6ae6f8d"
    assert orjson.dumps(qwen2_spec().settings(), option=orjson.OPT_SORT_KEYS) == canonical
    assert qwen2_spec().fingerprint == xxhash.xxh3_128_hexdigest(canonical) == golden


def test_fingerprint_is_stable_across_processes_and_layout_imports_no_torch() -> None:
    script = (
        "import sys\n"
        "from foveal.renderers.layout import LayoutSpec, compute_layout\n"
        "spec = LayoutSpec('qwen3_vl', 16, 2, 2, 65536, 16777216)\n"
        "compute_layout(spec, 640, 480)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'transformers') if m in sys.modules)\n"
        "print(spec.fingerprint, heavy)\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    here = LayoutSpec("qwen3_vl", 16, 2, 2, 65536, 16777216).fingerprint
    assert out.stdout.split() == [here, "[]"]


@pytest.mark.parametrize("name", SETTINGS[1:])
@pytest.mark.parametrize("bad", [0, -3, True, 14.0, "14", None])
def test_invalid_setting_is_rejected_naming_the_field(name: str, bad: object) -> None:
    with pytest.raises(ContractError) as caught:
        qwen2_spec(**{name: bad})
    assert caught.value.field == f"layout.{name}" and caught.value.value == bad


@pytest.mark.parametrize("bad", ["", None, 3])
def test_invalid_family_is_rejected(bad: object) -> None:
    with pytest.raises(ContractError) as caught:
        qwen2_spec(family=bad)
    assert caught.value.field == "layout.family"


def test_max_pixels_below_min_pixels_is_rejected() -> None:
    with pytest.raises(ContractError) as caught:
        qwen2_spec(min_pixels=5000, max_pixels=4999)
    assert caught.value.field == "layout.max_pixels" and caught.value.value == 4999


@settings(max_examples=100, deadline=None)
@given(
    kwargs=spec_kwargs(),
    new_min=st.none() | st.integers(1, 10**6),
    new_max=st.none() | st.integers(10**6, 10**8),
)
def test_with_pixel_bounds_overrides_only_what_is_given(kwargs: dict, new_min, new_max) -> None:
    spec = LayoutSpec(**kwargs)
    if (new_min or spec.min_pixels) > (new_max or spec.max_pixels):
        with pytest.raises(ContractError):
            with_pixel_bounds(spec, new_min, new_max)
        return
    bounded = with_pixel_bounds(spec, new_min, new_max)
    assert bounded.min_pixels == (spec.min_pixels if new_min is None else new_min)
    assert bounded.max_pixels == (spec.max_pixels if new_max is None else new_max)
    assert dataclasses.replace(bounded, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels) == spec
    assert (bounded.fingerprint == spec.fingerprint) == (bounded == spec)


@pytest.mark.parametrize("name", ["llava", "Qwen2_VL", "", None, 7])
def test_unknown_family_is_rejected(name: object) -> None:
    with pytest.raises(UnknownFamily) as caught:
        layout_family(name)
    assert caught.value.field == "family" and caught.value.value == name


def test_registered_families_resolve_to_their_own_adapter() -> None:
    assert set(family_names()) >= {"qwen2_vl", "qwen3_vl"}
    assert all(layout_family(name).name == name for name in family_names())


def test_layout_of_a_spec_with_an_unknown_family_is_rejected() -> None:
    with pytest.raises(UnknownFamily):
        compute_layout(qwen2_spec(family="not_a_family"), 224, 224)


@pytest.mark.parametrize("bad", [0, -1, True, 224.0, "224", None])
def test_image_sides_must_be_positive_ints(bad: object) -> None:
    for width, height, field in ((bad, 224, "image.width"), (224, bad, "image.height")):
        with pytest.raises(ImageRejected) as caught:
            compute_layout(qwen2_spec(), width, height)
        assert caught.value.field == field


def test_numpy_integer_sides_give_the_same_layout_as_ints() -> None:
    assert compute_layout(qwen2_spec(), np.int64(640), np.uint16(480)) == compute_layout(qwen2_spec(), 640, 480)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("short", [1, 3, 7])
def test_aspect_ratio_beyond_200_is_rejected_naming_the_size(family: str, short: int) -> None:
    spec = qwen2_spec(family=family)
    compute_layout(spec, 200 * short, short)
    compute_layout(spec, short, 200 * short)
    for width, height in ((200 * short + 1, short), (short, 200 * short + 1)):
        with pytest.raises(ImageRejected) as caught:
            compute_layout(spec, width, height)
        assert caught.value.field == "image.aspect_ratio" and caught.value.value == f"{width}x{height}"


@settings(max_examples=150, deadline=None)
@given(kwargs=spec_kwargs(), width=st.integers(1, 9000), height=st.integers(1, 9000))
def test_layout_is_patch_aligned_and_payload_is_json_safe(kwargs: dict, width: int, height: int) -> None:
    spec = LayoutSpec(**kwargs)
    if max(width, height) > 200 * min(width, height):
        return
    layout = compute_layout(spec, width, height)
    t, grid_h, grid_w = layout.image_grid_thw
    assert layout.resized == (grid_h * spec.patch_size, grid_w * spec.patch_size)
    assert t == 1 and grid_h % spec.merge_size == 0 and grid_w % spec.merge_size == 0
    assert layout.num_placeholder_tokens * spec.merge_size**2 == layout.num_patches
    assert (layout.family, layout.fingerprint) == (spec.family, spec.fingerprint)
    payload = layout.payload()
    assert orjson.loads(orjson.dumps(payload)) == payload
    assert payload == {"image_grid_thw": [t, grid_h, grid_w], "num_placeholder_tokens": layout.num_placeholder_tokens}


def test_layout_is_immutable() -> None:
    layout = compute_layout(qwen2_spec(), 640, 480)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.num_placeholder_tokens = 1  # type: ignore[misc]
