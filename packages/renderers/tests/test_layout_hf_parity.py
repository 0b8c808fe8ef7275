"""Our pure layout against transformers' real Qwen-VL image processor (PIL/numpy backend, no torch needed).

Two routes, both HF's own code: the bulk (>= 1,000 distinct cases per family) goes through the
module's `smart_resize` (the function the processor's `resize` calls) and the processor's
`get_number_of_image_patches` (the API vLLM uses to count placeholders without pixels); >= 150 cases
per family run real PIL images through the processor and compare `image_grid_thw` and the shape of
`pixel_values`. Sizes cover tiny images near the factor, round-half-even ties, areas at and around
the min/max pixel bounds, aspect ratios around 200:1 (both sides must refuse past it) and random
pixel bounds.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from foveal.renderers.errors import ContractError, ImageRejected
from foveal.renderers.layout import (
    ImageLayout,
    LayoutSpec,
    compute_layout,
    spec_from_image_processor,
    with_pixel_bounds,
)

MERGE = 2
# Patch size and (min_pixels, max_pixels) as published: the HF class default and the Qwen2/2.5-VL hub
# preprocessor_config for qwen2_vl; the Qwen3-VL hub preprocessor_config for qwen3_vl.
PUBLISHED = {
    "qwen2_vl": (14, ((56 * 56, 28 * 28 * 1280), (56 * 56, 28 * 28 * 16384))),
    "qwen3_vl": (16, ((65536, 16777216),)),
}
# (branch, height, width, min_pixels, max_pixels) where exact arithmetic and HF's binary64 steps
# disagree; the processor's float result is what the model sees, so it is the truth.
FLOAT_TIES = {
    "qwen2_vl": (("grow", 19, 19, 3136, 1003520), ("shrink", 79, 316, 3136, 12544), ("shrink", 130, 130, 3136, 12544)),
    "qwen3_vl": (("grow", 7, 343, 65536, 16777216), ("grow", 28, 343, 65536, 16777216)),
}
KINDS = ("general", "tiny", "near_min", "near_max", "aspect")


class Case(NamedTuple):
    kind: str
    height: int
    width: int
    min_pixels: int
    max_pixels: int


def hf_processor(
    family: str, min_pixels: int, max_pixels: int, legacy_kwargs: bool = False
) -> Qwen2VLImageProcessorPil:
    """A real PIL-backend processor configured like the family's checkpoints, either kwarg style."""
    patch = PUBLISHED[family][0]
    bounds = (
        {"min_pixels": min_pixels, "max_pixels": max_pixels}
        if legacy_kwargs
        else {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    )
    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=MERGE, temporal_patch_size=2, **bounds)


def factor_of(family: str) -> int:
    return PUBLISHED[family][0] * MERGE


def draw_side(draw: st.DrawFn, max_side: int) -> int:
    """Log-uniform sides: mostly small images, a few large ones."""
    octave = draw(st.integers(0, max_side.bit_length() - 1))
    return draw(st.integers(2**octave, min(max_side, 2 ** (octave + 1))))


def draw_tiny(draw: st.DrawFn, factor: int) -> int:
    """Sides up to three factors, half of them on or next to a half-factor tie of round-half-even."""
    if draw(st.booleans()):
        return draw(st.integers(1, 3 * factor))
    return max(1, draw(st.integers(1, 6)) * factor // 2 + draw(st.integers(-1, 1)))


def draw_near_area(draw: st.DrawFn, factor: int, area: int) -> tuple[int, int]:
    """(height, width) whose rounded area sits at a bound's branch threshold, give or take one step."""
    rows = draw(st.integers(1, 2 * math.isqrt(area) // factor + 1))
    cols = max(1, round(area / (rows * factor * factor))) + draw(st.integers(-1, 1))
    jitter = st.integers(-(factor // 2), factor // 2)
    return max(1, rows * factor + draw(jitter)), max(1, cols * factor + draw(jitter))


def draw_near_aspect_limit(draw: st.DrawFn) -> tuple[int, int]:
    """Sides around 200:1 (just inside, exactly at, just past) or well either side of it."""
    short = draw(st.integers(1, 40))
    if draw(st.booleans()):
        long = draw(st.integers(200 * short - 3, 200 * short + 3))
    else:
        long = draw(st.integers(150 * short, 400 * short))
    return (short, long) if draw(st.booleans()) else (long, short)


def draw_size(draw: st.DrawFn, kind: str, factor: int, bounds: tuple[int, int], max_side: int) -> tuple[int, int]:
    if kind == "general":
        return draw_side(draw, max_side), draw_side(draw, max_side)
    if kind == "tiny":
        return draw_tiny(draw, factor), draw_tiny(draw, factor)
    if kind == "aspect":
        return draw_near_aspect_limit(draw)
    return draw_near_area(draw, factor, bounds[0] if kind == "near_min" else bounds[1])


def published_bounds(family: str) -> st.SearchStrategy[tuple[int, int]]:
    return st.sampled_from(PUBLISHED[family][1])


@st.composite
def random_bounds(draw: st.DrawFn, family: str, max_area_steps: int) -> tuple[int, int]:
    """Random (min_pixels, max_pixels), including min = max and max below one factor squared."""
    step = factor_of(family) ** 2
    low = draw(st.integers(1, step) if draw(st.booleans()) else st.integers(1, step * 64))
    span = step if draw(st.booleans()) else step * max_area_steps
    high = draw(st.integers(low, low + span))
    return low, high


@st.composite
def cases(
    draw: st.DrawFn, family: str, max_side: int, bounds: st.SearchStrategy[tuple[int, int]], kinds=KINDS
) -> Case:
    """One size of a drawn kind under drawn pixel bounds (near_* sizes follow the bounds, not max_side)."""
    min_pixels, max_pixels = draw(bounds)
    kind = draw(st.sampled_from(kinds))
    height, width = draw_size(draw, kind, factor_of(family), (min_pixels, max_pixels), max_side)
    return Case(kind, height, width, min_pixels, max_pixels)


def hf_resized(case: Case, factor: int) -> tuple[int, int] | None:
    """HF's resized (height, width), or None where HF refuses the image."""
    try:
        return hf_smart_resize(case.height, case.width, factor, case.min_pixels, case.max_pixels)
    except ValueError:
        return None


def our_layout(spec: LayoutSpec, case: Case) -> ImageLayout | None:
    """Our layout under the case's pixel bounds, or None where we refuse it (only ever for aspect ratio)."""
    try:
        return compute_layout(with_pixel_bounds(spec, case.min_pixels, case.max_pixels), case.width, case.height)
    except ImageRejected as rejected:
        assert rejected.field == "image.aspect_ratio"
        return None


def check_against_patch_count(processor, spec: LayoutSpec, case: Case) -> str:
    """Compare one case with HF's resize rule and patch count; return which branch it exercised."""
    factor = spec.patch_size * MERGE
    expected = hf_resized(case, factor)
    layout = our_layout(spec, case)
    bounds = {"min_pixels": case.min_pixels, "max_pixels": case.max_pixels}
    if expected is None:
        assert layout is None, case
        with pytest.raises(ValueError):
            processor.get_number_of_image_patches(case.height, case.width, bounds)
        return "rejected"
    assert layout is not None, case
    patches = processor.get_number_of_image_patches(case.height, case.width, bounds)
    assert layout.resized == expected, case
    assert layout.image_grid_thw == (1, expected[0] // spec.patch_size, expected[1] // spec.patch_size), case
    assert (layout.num_patches, layout.num_placeholder_tokens) == (patches, patches // MERGE**2), case
    return "accepted"


def bulk_cases(family: str) -> st.SearchStrategy[Case]:
    """Pure arithmetic on HF's side too, so sides up to 8192 and max areas up to 16384 factor-squares."""
    return cases(family, 8192, published_bounds(family) | random_bounds(family, max_area_steps=16384))


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_layout_matches_hf_resize_rule_and_patch_count(family: str) -> None:
    processor = hf_processor(family, *PUBLISHED[family][1][0])
    spec = spec_from_image_processor(processor, family)
    seen: set[Case] = set()
    outcomes: Counter[str] = Counter()

    # Nine cases per example keep Hypothesis' per-example overhead off the 1,000+ sizes; drawing them is
    # legitimately slower than one case, so the too_slow health check would only flake on a busy machine.
    @settings(max_examples=130, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=st.lists(bulk_cases(family), min_size=9, max_size=9, unique=True))
    def check(batch: list[Case]) -> None:
        for case in batch:
            outcomes[check_against_patch_count(processor, spec, case)] += 1
            seen.add(case)

    check()
    kinds = Counter(case.kind for case in seen)
    assert len(seen) >= 1000 and min(kinds[kind] for kind in KINDS) >= 100, kinds
    assert outcomes["rejected"] >= 30 and outcomes["accepted"] >= 800, outcomes


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_every_tiny_and_near_limit_size_matches_hf(family: str) -> None:
    """Exhaustive where the rule is most delicate: every side up to 2 factors + 2, and 200:1 +- 3."""
    factor = factor_of(family)
    processor = hf_processor(family, *PUBLISHED[family][1][0])
    spec = spec_from_image_processor(processor, family)
    tiny_sides = range(1, 2 * factor + 3)
    grid = [(h, w) for h in tiny_sides for w in tiny_sides]
    limit = [(s, 200 * s + d) for s in range(1, 60) for d in range(-3, 4)]
    sizes = grid + limit + [(w, h) for h, w in limit]
    bounds = (PUBLISHED[family][1][0], (factor * factor, 4 * factor * factor))
    outcomes = Counter(
        check_against_patch_count(processor, spec, Case("sweep", h, w, lo, hi))
        for lo, hi in bounds
        for h, w in sizes
    )
    past_the_limit = 2 * 59 * 3  # d = 1..3 for each short side, both orientations
    assert outcomes["rejected"] == len(bounds) * past_the_limit


def processor_cases(family: str) -> st.SearchStrategy[Case]:
    """Cheap enough for real pixel work: published bounds with sides up to 700 (their max area would
    mean 16-megapixel images), or random bounds of at most 128 factor-squares with sides up to 2048."""
    affordable = tuple(kind for kind in KINDS if kind != "near_max")
    published = cases(family, 700, published_bounds(family), kinds=affordable)
    return published | cases(family, 2048, random_bounds(family, max_area_steps=128))


def run_processor(processor: Qwen2VLImageProcessorPil, case: Case) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """image_grid_thw and pixel_values of one real RGB image, or None where the processor refuses it."""
    image = Image.new("RGB", (case.width, case.height), (case.width % 256, case.height % 256, 128))
    try:
        out = processor(images=[image], input_data_format="channels_last")
    except ValueError:
        return None
    return tuple(int(v) for v in out["image_grid_thw"][0]), out["pixel_values"].shape


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_layout_matches_the_real_processor_on_real_images(family: str) -> None:
    seen: set[Case] = set()

    @settings(max_examples=225, deadline=None, database=None)
    @given(case=processor_cases(family), legacy_kwargs=st.booleans())
    def check(case: Case, legacy_kwargs: bool) -> None:
        processor = hf_processor(family, case.min_pixels, case.max_pixels, legacy_kwargs)
        spec = spec_from_image_processor(processor, family)
        result, layout = run_processor(processor, case), our_layout(spec, case)
        seen.add(case)
        if result is None:
            assert layout is None, case
            return
        grid, pixel_shape = result
        assert layout is not None and layout.image_grid_thw == grid, case
        assert pixel_shape == (layout.num_patches, 3 * spec.temporal_patch_size * spec.patch_size**2), case

    check()
    assert len(seen) >= 150


def exact_side(side: int, area: int, bound: int, factor: int, grow: bool) -> int:
    """side * sqrt(bound / area) rounded up (grow) or down (shrink) to the factor, in exact integers."""
    steps = math.isqrt(side * side * bound // (factor * factor * area))
    if grow and steps * steps * factor * factor * area < side * side * bound:
        steps += 1
    return steps * factor if grow else max(factor, steps * factor)


@pytest.mark.parametrize(("family", "tie"), [(family, tie) for family, ties in FLOAT_TIES.items() for tie in ties])
def test_float_ties_follow_the_processor_not_exact_arithmetic(family: str, tie: tuple) -> None:
    branch, height, width, min_pixels, max_pixels = tie
    processor = hf_processor(family, min_pixels, max_pixels)
    grid, _ = run_processor(processor, Case("tie", height, width, min_pixels, max_pixels))
    bound, grow = (min_pixels, True) if branch == "grow" else (max_pixels, False)
    patch = PUBLISHED[family][0]
    exact = tuple(exact_side(side, height * width, bound, factor_of(family), grow) // patch for side in (height, width))
    assert compute_layout(spec_from_image_processor(processor, family), width, height).image_grid_thw == grid
    assert grid[1:] != exact


@pytest.mark.parametrize("family", sorted(PUBLISHED))
@pytest.mark.parametrize("legacy_kwargs", [False, True])
def test_spec_reads_the_processor_settings(family: str, legacy_kwargs: bool) -> None:
    patch = PUBLISHED[family][0]
    processor = hf_processor(family, 1234, 567890, legacy_kwargs)
    spec = spec_from_image_processor(processor, family)
    assert spec == LayoutSpec(family, patch, MERGE, 2, 1234, 567890)


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_torchvision_backend_gives_the_same_spec_and_grid(family: str) -> None:
    pytest.importorskip("torchvision")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    lo, hi = PUBLISHED[family][1][0]
    patch = PUBLISHED[family][0]
    size = {"shortest_edge": lo, "longest_edge": hi}
    processor = Qwen2VLImageProcessor(patch_size=patch, merge_size=MERGE, size=size)
    spec = spec_from_image_processor(processor, family)
    assert spec == spec_from_image_processor(hf_processor(family, lo, hi), family)
    out = processor(images=[Image.new("RGB", (333, 217))])
    assert compute_layout(spec, 333, 217).image_grid_thw == tuple(int(v) for v in out["image_grid_thw"][0])


def test_spec_reader_refuses_a_processor_of_another_family() -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    with pytest.raises(ContractError) as caught:
        spec_from_image_processor(CLIPImageProcessorPil(), "qwen2_vl")
    assert caught.value.field == "image_processor" and caught.value.value == "CLIPImageProcessorPil"


def test_spec_reader_refuses_a_processor_that_does_not_resize() -> None:
    processor = Qwen2VLImageProcessorPil(do_resize=False)
    with pytest.raises(ContractError) as caught:
        spec_from_image_processor(processor, "qwen2_vl")
    assert caught.value.field == "image_processor.do_resize"


def test_spec_reader_refuses_a_size_without_pixel_bounds_like_the_processor_does() -> None:
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 3136})
    with pytest.raises(ValueError, match="longest_edge"):
        processor(images=[Image.new("RGB", (64, 64))])
    with pytest.raises(ContractError) as caught:
        spec_from_image_processor(processor, "qwen2_vl")
    assert caught.value.field == "image_processor.size.longest_edge"
