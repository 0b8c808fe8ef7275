"""build_mm_refs: spans must agree exactly with the image placeholder tokens, or the sample is refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import PlaceholderMismatch
from foveal.trainer.data.mm_refs import MMRef, build_mm_refs, check_mm_refs, check_ref_layout, mm_refs_of

IMAGE = 7
TEXT = 3


def descriptor(tokens: int, name: str = "a") -> RawImageDescriptor:  # name: one hex digit
    """A descriptor whose layout needs `tokens` placeholders (grid 1 x 2 x 2*tokens, merged 2x2)."""
    return RawImageDescriptor(
        raw_image_uri=f"file:///store/{name}.png",
        hash=name * 32,
        family="qwen2_vl",
        layout_fingerprint="ab" * 16,
        payload={"image_grid_thw": [1, 2, 2 * tokens], "num_placeholder_tokens": tokens},
    )


def two_images() -> tuple[list[int], list[tuple[RawImageDescriptor, tuple[int, int]]]]:
    """[T, T, I*4, T, I*2, T]: image 0 at 2..6, image 1 at 7..9."""
    tokens = [TEXT, TEXT, *[IMAGE] * 4, TEXT, *[IMAGE] * 2, TEXT]
    return tokens, [(descriptor(4, "a"), (2, 4)), (descriptor(2, "b"), (7, 2))]


def test_matching_spans_become_mm_refs_in_order() -> None:
    tokens, images = two_images()
    refs = build_mm_refs(tokens, images, IMAGE, sample_id="s1")
    assert [(r.offset, r.length, r.descriptor) for r in refs] == [(2, 4, images[0][0]), (7, 2, images[1][0])]
    assert [r.end for r in refs] == [6, 9]


def test_text_only_sample_has_no_refs() -> None:
    assert build_mm_refs([TEXT, TEXT], [], IMAGE) == []


def _error(tokens: list[int], images: list, sample_id: str = "s1") -> PlaceholderMismatch:
    with pytest.raises(PlaceholderMismatch) as caught:
        build_mm_refs(tokens, images, IMAGE, sample_id=sample_id)
    return caught.value


def test_span_length_other_than_the_payload_count_is_rejected() -> None:
    tokens, images = two_images()
    tokens[9:9] = [IMAGE]  # three placeholders now, span says 3, payload says 2
    images[1] = (images[1][0], (7, 3))
    error = _error(tokens, images, sample_id="conv-9")
    assert error.field == "sample 'conv-9'.mm_refs[1].length" and error.value == 3


def test_span_shifted_by_one_token_is_rejected() -> None:
    tokens, images = two_images()
    images[0] = (images[0][0], (1, 4))
    error = _error(tokens, images)
    assert error.field == "sample 's1'.mm_refs[0].span" and error.value == (1, 4)


def test_overlapping_spans_are_rejected() -> None:
    tokens = [TEXT, *[IMAGE] * 4, TEXT]
    images = [(descriptor(4, "a"), (1, 4)), (descriptor(2, "b"), (3, 2))]
    error = _error(tokens, images)
    assert error.field == "sample 's1'.mm_refs[1].offset" and error.value == 3


def test_spans_out_of_order_are_rejected() -> None:
    tokens, images = two_images()
    error = _error(tokens, [images[1], images[0]])
    assert error.field == "sample 's1'.mm_refs[1].offset"


def test_span_past_the_last_token_is_rejected() -> None:
    tokens, images = two_images()
    images[1] = (images[1][0], (len(tokens) - 1, 2))
    error = _error(tokens, images)
    assert error.field == "sample 's1'.mm_refs[1].offset" and error.value == (len(tokens) - 1, 2)


@pytest.mark.parametrize("offset", [-1, True, 2.0, "2"])
def test_offset_that_is_not_a_non_negative_int_is_rejected(offset: object) -> None:
    tokens, images = two_images()
    images[0] = (images[0][0], (offset, 4))
    assert _error(tokens, images).field == "sample 's1'.mm_refs[0].offset"


def test_placeholder_outside_every_span_is_rejected() -> None:
    tokens, images = two_images()
    tokens[-1] = IMAGE
    error = _error(tokens, images)
    assert error.field == "sample 's1'.token_ids" and error.value == f"placeholder at {len(tokens) - 1}"


def test_image_without_a_ref_is_a_stray_placeholder_run() -> None:
    tokens, images = two_images()
    assert _error(tokens, images[:1]).field == "sample 's1'.token_ids"


def test_check_mm_refs_uses_the_given_image_token() -> None:
    tokens, images = two_images()
    refs = build_mm_refs(tokens, images, IMAGE)
    with pytest.raises(PlaceholderMismatch):
        check_mm_refs(tokens, refs, TEXT, "s1")


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[int], list[tuple[RawImageDescriptor, tuple[int, int]]]]:
    """Text runs (at least one token) between images of random placeholder counts."""
    tokens: list[int] = []
    images = []
    for index in range(draw(st.integers(0, 4))):
        tokens += draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
        count = draw(st.integers(1, 6))
        images.append((descriptor(count, "abcd"[index]), (len(tokens), count)))
        tokens += [IMAGE] * count
    tokens += draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    return tokens, images


@settings(max_examples=150, deadline=None)
@given(sequences(), st.data())
def test_every_correct_layout_is_accepted_and_every_shifted_span_refused(sample, data: st.DataObject) -> None:
    tokens, images = sample
    refs = build_mm_refs(tokens, images, IMAGE)
    assert all(isinstance(ref, MMRef) for ref in refs) and len(refs) == len(images)
    if images:
        index = data.draw(st.integers(0, len(images) - 1))
        shift = data.draw(st.sampled_from([-1, 1]))
        desc, (offset, length) = images[index]
        moved = [*images[:index], (desc, (offset + shift, length)), *images[index + 1 :]]
        with pytest.raises(PlaceholderMismatch):
            build_mm_refs(tokens, moved, IMAGE)


def test_spans_may_start_at_the_first_token_touch_each_other_and_end_at_the_last() -> None:
    first = MMRef(descriptor=descriptor(2, "a"), offset=0, length=2)
    second = MMRef(descriptor=descriptor(3, "b"), offset=2, length=3)
    check_ref_layout(5, [first, second], "s1")  # [I I | I I I]: no text around or between them, nothing overlaps
    tokens = [IMAGE, IMAGE, TEXT, IMAGE, IMAGE]
    refs = build_mm_refs(tokens, [(descriptor(2, "a"), (0, 2)), (descriptor(2, "b"), (3, 2))], IMAGE)
    assert [(r.offset, r.end) for r in refs] == [(0, 2), (3, 5)]


def test_layout_refusals_say_what_was_expected() -> None:
    tokens, images = two_images()
    too_long = _error(tokens[:8], images)
    assert too_long.expected == "a span ending at or before the sample's 8 tokens"
    overlap = _error([TEXT, *[IMAGE] * 4, TEXT], [(descriptor(4, "a"), (1, 4)), (descriptor(2, "b"), (3, 2))])
    assert overlap.expected == ">= 5: spans in order, not overlapping the previous image's"
    images[1] = (images[1][0], (7, 3))
    assert _error(tokens, images).expected == "2 (payload.num_placeholder_tokens)"


@pytest.mark.parametrize(("span", "name", "value"), [((2, 0), "length", 0), ((-1, 4), "offset", -1)])
def test_a_span_that_is_not_a_valid_run_is_refused_naming_its_part(
    span: tuple[int, int], name: str, value: int
) -> None:
    tokens, images = two_images()
    images[0] = (images[0][0], span)
    error = _error(tokens, images)
    assert (error.field, error.value, error.expected) == (
        f"sample 's1'.mm_refs[0].{name}", value, "a non-negative int (length > 0)")  # fmt: skip


def test_an_image_whose_span_holds_no_placeholders_is_named_by_its_span() -> None:
    error = _error([TEXT] * 8, [(descriptor(4, "a"), (2, 4))])
    assert (error.field, error.value) == ("sample 's1'.mm_refs[0].span", "image 0 of 1")


def test_a_sample_without_an_id_is_reported_as_question_mark() -> None:
    tokens, images = two_images()
    with pytest.raises(PlaceholderMismatch) as caught:
        build_mm_refs(tokens[:8], images, IMAGE)
    assert caught.value.field == "sample '?'.mm_refs[1].offset"


@dataclass(frozen=True)
class Placed:
    descriptor: RawImageDescriptor
    offset: int
    length: int


def test_mm_refs_of_placed_images_and_of_a_model_without_an_image_token() -> None:
    tokens, images = two_images()
    placed = [Placed(d, offset, length) for d, (offset, length) in images]
    assert mm_refs_of(tokens, placed, IMAGE, sample_id="s1") == tuple(build_mm_refs(tokens, images, IMAGE))
    assert mm_refs_of([1, 1, TEXT], [], None, sample_id="s1") == ()  # no image token: no id is a placeholder
    with pytest.raises(PlaceholderMismatch) as caught:
        mm_refs_of(tokens, placed, None, sample_id="s2")
    assert caught.value.field == "sample 's2'.mm_refs[0].span"
