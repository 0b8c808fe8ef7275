"""Collating a planned bin into one packed row: targets shift within samples, images keep sample order."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import MappingProxyType

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedModel

from foveal.renderers.errors import ContractError, OverlongSample, PlaceholderMismatch
from foveal.trainer.data.collate import IGNORE_INDEX, PackSample, collate_packed, fit_sample
from foveal.trainer.data.adapters import concat_pixel_kwargs
from foveal.trainer.data.adapters.mrope import MropePositions
from foveal.trainer.data.materialize import MaterializedSample
from foveal.trainer.data.positions import TextPositions, position_scheme


@pytest.fixture(scope="module")
def vl_model(load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model("qwen2_5_vl")


@st.composite
def text_samples(draw: st.DrawFn) -> list[PackSample]:
    samples = []
    for index in range(draw(st.integers(1, 5))):
        length = draw(st.integers(1, 12))
        floats = st.lists(st.floats(-4, 4, width=32), min_size=length, max_size=length)
        samples.append(
            PackSample(
                sample_id=f"s{index}",
                token_ids=draw(st.lists(st.integers(0, 2000), min_size=length, max_size=length)),
                loss_weights=draw(floats),
                logprobs=draw(floats),
                advantages=draw(floats),
                sample_weight=draw(st.floats(0, 2)),
            )
        )
    return samples


@settings(max_examples=60, deadline=None)
@given(text_samples())
def test_every_target_is_the_next_token_of_the_same_sample(samples: list[PackSample]) -> None:
    batch = collate_packed(samples, TextPositions())
    bounds = batch.cu_seqlens.tolist()
    assert bounds == [0, *torch.tensor([len(s.token_ids) for s in samples]).cumsum(0).tolist()]
    for sample, (start, end) in zip(samples, itertools.pairwise(bounds), strict=True):
        assert batch.input_ids[0, start:end].tolist() == list(sample.token_ids)
        assert batch.labels[0, start : end - 1].tolist() == list(sample.token_ids[1:])
        assert batch.labels[0, end - 1] == IGNORE_INDEX
        for name in ("loss_weights", "logprobs", "advantages"):
            row = getattr(batch, name)[0]
            assert row[start : end - 1].tolist() == pytest.approx(list(getattr(sample, name)[1:]))
            assert row[end - 1] == 0.0
        assert batch.position_ids[0, start:end].tolist() == list(range(end - start))
    assert batch.position_ids.shape == (1, batch.num_tokens)
    assert batch.sample_weights.tolist() == pytest.approx([s.sample_weight for s in samples])
    assert batch.pixel_kwargs == {}


def _image_sample(sample_id: str, model: torch.nn.Module, grids: list[list[int]], fill: float) -> PackSample:
    """Text, then one vision block per grid; pixel rows hold `fill` so their order is visible after packing."""
    config = model.config
    merge = config.vision_config.spatial_merge_size
    tokens = [11, 12]
    for t, h, w in grids:
        tokens += [config.vision_start_token_id, *[config.image_token_id] * (t * h * w // merge**2)]
        tokens += [config.vision_end_token_id, 13]
    grid = torch.tensor(grids)
    width = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size**2
    pixels = torch.full((int(grid.prod(-1).sum()), width), fill)
    images = {"pixel_values": pixels, "image_grid_thw": grid}
    return PackSample(sample_id, tokens, [1.0] * len(tokens), pixel_kwargs=images)


def test_images_are_concatenated_in_sample_order(vl_model: torch.nn.Module) -> None:
    samples = [
        _image_sample("two-images", vl_model, [[1, 4, 6], [1, 2, 2]], fill=1.0),
        PackSample("text", [5, 6, 7], [1.0, 1.0, 1.0]),
        _image_sample("one-image", vl_model, [[1, 8, 4]], fill=2.0),
    ]
    batch = collate_packed(samples, position_scheme(vl_model))
    assert batch.pixel_kwargs["image_grid_thw"].tolist() == [[1, 4, 6], [1, 2, 2], [1, 8, 4]]
    assert batch.pixel_kwargs["pixel_values"][:, 0].tolist() == [1.0] * (24 + 4) + [2.0] * 32
    assert batch.position_ids.shape == (4, 1, batch.num_tokens)
    starts = batch.cu_seqlens[:-1].long()
    assert batch.position_ids[:, 0, starts].eq(0).all()  # every row restarts at each sample


def test_fit_sample_truncates_tokens_and_per_token_fields_together() -> None:
    sample = PackSample("long", list(range(10)), [0.1 * i for i in range(10)], advantages=[float(i) for i in range(10)])
    fitted = fit_sample(sample, seq_len=4, overlong_text="truncate")
    assert list(fitted.token_ids) == [0, 1, 2, 3]
    assert list(fitted.loss_weights) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert list(fitted.advantages) == [0.0, 1.0, 2.0, 3.0]
    assert fitted.logprobs is None
    assert fit_sample(sample, seq_len=10) is sample


def test_fit_sample_refuses_overlong_text_by_default() -> None:
    with pytest.raises(OverlongSample) as error:
        fit_sample(PackSample("txt", list(range(10)), [1.0] * 10), seq_len=4)
    assert (error.value.sample_id, error.value.length, error.value.limit) == ("txt", 10, 4)


def test_fit_sample_never_truncates_a_multimodal_sample(vl_model: torch.nn.Module) -> None:
    sample = _image_sample("img", vl_model, [[1, 4, 4]], fill=0.0)
    with pytest.raises(OverlongSample) as error:
        fit_sample(sample, seq_len=5, overlong_text="truncate")
    assert (error.value.sample_id, error.value.length, error.value.limit) == ("img", len(sample.token_ids), 5)


def test_per_token_field_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ContractError) as error:
        PackSample("s", [1, 2, 3], [1.0, 1.0])
    assert (error.value.field, error.value.value) == ("sample 's'.loss_weights", 2)


def test_pixel_rows_must_match_the_grid(vl_model: torch.nn.Module) -> None:
    images = {"pixel_values": torch.zeros(5, 8), "image_grid_thw": torch.tensor([[1, 2, 2]])}
    with pytest.raises(PlaceholderMismatch) as error:
        collate_packed([PackSample("s", [1], [1.0], pixel_kwargs=images)], position_scheme(vl_model))
    assert (error.value.field, error.value.value) == ("sample 's'.pixel_values", 5)


@pytest.mark.parametrize("text_model", [False, True])
def test_pixels_without_a_grid_are_refused(vl_model: torch.nn.Module, text_model: bool) -> None:
    sample = PackSample("s", [1], [1.0], pixel_kwargs={"pixel_values": torch.zeros(4, 8)})
    with pytest.raises(PlaceholderMismatch):
        collate_packed([sample], TextPositions() if text_model else position_scheme(vl_model))


def test_image_kwargs_join_name_by_name_and_only_when_named_alike() -> None:
    parts = [{"x": torch.zeros(2, 1), "n": torch.tensor([2])}, {}, {"n": torch.tensor([1]), "x": torch.ones(1, 1)}]
    joined = concat_pixel_kwargs(parts)
    assert joined["x"].flatten().tolist() == [0.0, 0.0, 1.0] and joined["n"].tolist() == [2, 1]
    with pytest.raises(ContractError) as error:
        concat_pixel_kwargs([{"x": torch.zeros(1)}, {"y": torch.zeros(1)}])
    assert error.value.field == "pixel_kwargs"


def test_a_per_token_field_on_only_some_samples_is_refused() -> None:
    samples = [PackSample("a", [1, 2], [1.0, 1.0], logprobs=[0.0, -1.0]), PackSample("b", [3, 4], [1.0, 1.0])]
    with pytest.raises(ContractError) as error:
        collate_packed(samples, TextPositions())
    assert (error.value.field, error.value.value) == ("logprobs", ["b"])


def test_an_empty_bin_is_refused() -> None:
    with pytest.raises(ContractError):
        collate_packed([], TextPositions())


def test_batch_moves_every_tensor(vl_model: torch.nn.Module) -> None:
    scheme = position_scheme(vl_model)
    assert isinstance(scheme, MropePositions)
    batch = collate_packed([_image_sample("img", vl_model, [[1, 2, 2]], fill=0.0)], scheme).to("meta")
    tensors = [batch.input_ids, batch.labels, batch.loss_weights, batch.position_ids, batch.cu_seqlens]
    assert all(t.device.type == "meta" for t in [*tensors, *batch.pixel_kwargs.values()])


def test_materialized_samples_pack_like_pack_samples(vl_model: torch.nn.Module) -> None:
    """The materializer's output goes straight into collation and truncation, tensors and all."""
    image = _image_sample("img", vl_model, [[1, 4, 4]], fill=3.0)
    materialized = [
        MaterializedSample(
            sample_id=s.sample_id,
            token_ids=torch.tensor(s.token_ids),
            loss_weights=torch.tensor(s.loss_weights),
            sample_weight=0.5,
            logprobs=None,
            advantages=torch.zeros(len(s.token_ids)),
            pixel_kwargs=MappingProxyType(dict(s.pixel_kwargs)),
        )
        for s in (image, PackSample("text", list(range(8)), [1.0] * 8))
    ]
    scheme = position_scheme(vl_model)
    plain = collate_packed([image, PackSample("text", list(range(8)), [1.0] * 8)], scheme)
    packed = collate_packed(materialized, scheme)
    for name in ("input_ids", "labels", "loss_weights", "position_ids", "cu_seqlens"):
        assert torch.equal(getattr(packed, name), getattr(plain, name)), name
    for name in ("pixel_values", "image_grid_thw"):
        assert torch.equal(packed.pixel_kwargs[name], plain.pixel_kwargs[name]), name
    assert packed.sample_weights.tolist() == [0.5, 0.5]
    truncated = fit_sample(materialized[1], seq_len=5, overlong_text="truncate")
    assert truncated.token_ids.tolist() == [0, 1, 2, 3, 4] and len(truncated.advantages) == 5
