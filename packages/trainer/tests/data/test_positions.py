"""Per-sample position ids: restart at every sample, mrope rows as the Qwen-VL rule lays images out."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedModel

from foveal.renderers.errors import PlaceholderMismatch, UnknownFamily
from foveal.trainer.data.adapters.mrope import MropePositions
from foveal.trainer.data.positions import TextPositions, pack_positions, position_scheme

VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module", params=VL_FAMILIES)
def vl_model(request: pytest.FixtureRequest, load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model(request.param)


def _images(grids: list[list[int]] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Image kwargs for `grids`: a pixel row per patch, as the scheme checks them."""
    grid = torch.as_tensor(grids).view(-1, 3)
    return {"pixel_values": torch.zeros(int(grid.prod(-1).sum()), 1), "image_grid_thw": grid}


def _layout(model: torch.nn.Module, segments: list[int | tuple[int, int, int]]) -> tuple[list[int], torch.Tensor]:
    """Token ids for text runs (int: that many tokens) and images (a grid), and the grids as a tensor."""
    config = model.config
    merge = config.vision_config.spatial_merge_size
    tokens: list[int] = []
    for segment in segments:
        if isinstance(segment, int):
            tokens += [20 + i for i in range(segment)]
        else:
            t, h, w = segment
            tokens += [config.image_token_id] * (t * h * w // merge**2)
    grids = [segment for segment in segments if not isinstance(segment, int)]
    return tokens, torch.tensor(grids).view(-1, 3)


def _mrope_rule(segments: list[int | tuple[int, int, int]], merge: int) -> list[list[int]]:
    """The Qwen-VL layout written out: text advances all rows by one; an image of a merged h x w grid takes
    (start, start + row, start + column), and the text after it resumes at start + max(h, w)."""
    rows: list[list[int]] = [[], [], []]
    position = 0
    for segment in segments:
        if isinstance(segment, int):
            for row in rows:
                row.extend(range(position, position + segment))
            position += segment
            continue
        height, width = segment[1] // merge, segment[2] // merge
        for r in range(height):
            for c in range(width):
                for row, value in zip(rows, (position, position + r, position + c), strict=True):
                    row.append(value)
        position += max(height, width)
    return rows


def test_text_positions_restart_at_every_sample() -> None:
    scheme = TextPositions()
    parts = [scheme.sample_positions(f"s{n}", torch.zeros(n, dtype=torch.long), {}) for n in (3, 1, 4)]
    assert pack_positions(parts).tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]


def test_mrope_positions_follow_the_layout_rule_and_restart_per_sample(vl_model: torch.nn.Module) -> None:
    merge = vl_model.config.vision_config.spatial_merge_size
    first: list[int | tuple[int, int, int]] = [3, (1, 4, 6), 2, (1, 8, 4), 1]
    second: list[int | tuple[int, int, int]] = [2, (1, 2, 2), 4]
    scheme = position_scheme(vl_model)
    parts = []
    for name, segments in (("first", first), ("second", second)):
        tokens, grid = _layout(vl_model, segments)
        parts.append(scheme.sample_positions(name, torch.tensor(tokens), _images(grid)))
    packed = pack_positions(parts)
    lengths = [part.shape[-1] for part in parts]
    assert packed.shape == (4, 1, sum(lengths))
    assert packed[0, 0].tolist() == list(range(lengths[0])) + list(range(lengths[1]))
    assert packed[1:, 0].tolist() == [
        a + b for a, b in zip(_mrope_rule(first, merge), _mrope_rule(second, merge), strict=True)
    ]


def test_text_only_sample_of_a_vl_model_counts_plainly(vl_model: torch.nn.Module) -> None:
    positions = position_scheme(vl_model).sample_positions("text", torch.arange(20, 25), {})
    assert positions.tolist() == [list(range(5))] * 4


@pytest.mark.parametrize(
    ("segments", "grids", "field"),
    [
        ([2, (1, 4, 4), 1], [[1, 4, 4], [1, 2, 2]], "image_grid_thw"),  # more grids than images
        ([2, (1, 4, 4), 1], [[1, 4, 8]], "input_ids"),  # grid bigger than its placeholders
    ],
)
def test_placeholders_that_disagree_with_the_grids_are_refused(
    vl_model: torch.nn.Module, segments: list[int | tuple[int, int, int]], grids: list[list[int]], field: str
) -> None:
    tokens, _ = _layout(vl_model, segments)
    with pytest.raises(PlaceholderMismatch) as error:
        position_scheme(vl_model).sample_positions("bad", torch.tensor(tokens), _images(grids))
    assert error.value.field == f"sample 'bad'.{field}"


def test_video_placeholders_are_refused(vl_model: torch.nn.Module) -> None:
    tokens = torch.tensor([20, vl_model.config.video_token_id, 21])
    with pytest.raises(PlaceholderMismatch):
        position_scheme(vl_model).sample_positions("video", tokens, {})


def test_text_model_gets_one_dimensional_positions(load_tiny_model: Callable[[str], PreTrainedModel]) -> None:
    assert isinstance(position_scheme(load_tiny_model("qwen3")), TextPositions)


def test_vl_model_of_an_unknown_family_is_refused() -> None:
    model = SimpleNamespace(config=SimpleNamespace(model_type="llava", vision_config=SimpleNamespace()))
    with pytest.raises(UnknownFamily) as error:
        position_scheme(model)  # type: ignore[arg-type]
    assert error.value.value == "llava"


def test_text_scheme_refuses_images() -> None:
    with pytest.raises(PlaceholderMismatch):
        TextPositions().sample_positions("img", torch.arange(4), _images([[1, 2, 2]]))


def test_scheme_uses_the_models_own_rope_index(vl_model: torch.nn.Module) -> None:
    scheme = position_scheme(vl_model)
    assert isinstance(scheme, MropePositions)
    assert scheme.rope_index == vl_model.model.get_rope_index
