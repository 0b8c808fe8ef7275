"""pair_images: image i owns the i-th maximal run of placeholders, exactly as long as its layout says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.placeholders import RunFields, check_runs, pair_images, placeholder_runs

IMAGE = 9
TEXT = st.lists(st.integers(0, 8), min_size=1, max_size=4)
FIELDS = RunFields("refs[{}]".format, "refs[{}].count".format, "prompt")


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, int]]]:
    """Text (at least one token) around each of 0-4 runs of random length; the runs as constructed."""
    tokens, runs = draw(TEXT), []
    for _ in range(draw(st.integers(0, 4))):
        length = draw(st.integers(1, 6))
        runs.append((len(tokens), length))
        tokens += [IMAGE] * length + draw(TEXT)
    return tokens, runs


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_runs_found_are_the_runs_constructed(layout: tuple[list[int], list[tuple[int, int]]]) -> None:
    tokens, runs = layout
    assert placeholder_runs(tokens, IMAGE) == runs
    assert pair_images(tokens, IMAGE, [length for _, length in runs]) == runs
    check_runs(tokens, IMAGE, runs)


@settings(max_examples=200, deadline=None)
@given(layouts(), st.data())
def test_every_wrong_count_is_refused(layout: tuple[list[int], list[tuple[int, int]]], data: st.DataObject) -> None:
    tokens, runs = layout
    counts = [length for _, length in runs]
    wrong = data.draw(st.lists(st.integers(1, 7), max_size=5).filter(lambda c: c != counts))
    with pytest.raises(PlaceholderMismatch):
        pair_images(tokens, IMAGE, wrong)


def test_a_model_without_an_image_token_has_no_runs() -> None:
    assert placeholder_runs([1, 2, 3], None) == []
    with pytest.raises(PlaceholderMismatch) as caught:
        pair_images([1, 2, 3], None, [1], FIELDS)
    assert (caught.value.field, caught.value.value) == ("refs[0]", "image 0 of 1")


def test_each_error_names_the_callers_field() -> None:
    tokens = [1, IMAGE, IMAGE, 2, IMAGE, 3]
    cases = {
        "refs[2]": [2, 1, 1],  # more images than runs
        "refs[0].count": [3, 1],  # a run shorter than its image needs
        "prompt": [1, 1],  # a run longer than its image needs: the rest is stray
    }
    for field, counts in cases.items():
        with pytest.raises(PlaceholderMismatch) as caught:
            pair_images(tokens, IMAGE, counts, FIELDS)
        assert caught.value.field == field
    with pytest.raises(PlaceholderMismatch) as stray:
        pair_images(tokens, IMAGE, [2], FIELDS)  # a run no image accounts for
    assert (stray.value.field, stray.value.value) == ("prompt", "placeholder at 4")


def test_touching_images_read_as_one_run() -> None:
    with pytest.raises(PlaceholderMismatch) as caught:
        pair_images([IMAGE] * 4, IMAGE, [2, 2], FIELDS)
    assert (caught.value.field, caught.value.value) == ("prompt", "placeholder at 2")


def test_recorded_spans_must_be_the_runs() -> None:
    with pytest.raises(PlaceholderMismatch) as caught:
        check_runs([1, IMAGE, IMAGE, 2], IMAGE, [(2, 2)], FIELDS)
    assert (caught.value.field, caught.value.value) == ("refs[0].count", (2, 2))
