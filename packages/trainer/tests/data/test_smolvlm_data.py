"""SmolVLM2 on the trainer's data side: materializing rendered images as tiles and numbering packed samples.

The tiny SmolVLM (real SmolVLMProcessor and SmolVLMForConditionalGeneration classes: longest edge 128, 32 px tiles
plus the global view, 4 tokens a tile), the real renderer writing descriptors into a real store, real images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers import load_renderer
from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import ContractError, FingerprintMismatch, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import SmolVLMLayoutSpec, compute_layout
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.adapters.fixed_tokens import FixedTokenPositions
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.mm_refs import check_mm_refs
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask, sample_from_render

FAMILY = "smolvlm"


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)


@pytest.fixture(scope="module")
def processor(tiny_processor: Callable[[str], ProcessorMixin]) -> ProcessorMixin:
    return tiny_processor(FAMILY)


def rendered_sample(folder: Path, store: ImageStore, images: list[Image.Image], sample_id: str = "s") -> TrainingSample:
    """A user turn with `images` and a question, and the model's answer, through the real SmolVLM renderer."""
    renderer = load_renderer(folder, store=store)
    content = [*({"type": "image", "image": image} for image in images), {"type": "text", "text": "What is it?"}]
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": "A picture."}]
    rendered = renderer.render(messages)
    weights = loss_weights_from_mask(rendered.loss_mask)
    return sample_from_render(rendered, renderer.image_token_id, sample_id, weights)


def materializer(processor: Any, store: ImageStore, **config: Any) -> Materializer:
    settings = MultimodalConfig(**config)
    adapter = image_adapter(FAMILY, processor, settings)
    return Materializer(adapter, store, missing_image_policy=settings.missing_image_policy)


def test_rendered_images_materialize_exactly_as_the_smolvlm_processor_computes_them(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    images = [picture(90, 60, 0), picture(40, 130, 1)]  # 4 x 3 tiles + the global view; 2 x 4 + 1
    sample = rendered_sample(tiny_model_dir(FAMILY), store, images)
    assert [ref.descriptor.payload for ref in sample.mm_refs] == [
        {"image_grid_thw": [13, 2, 2], "num_placeholder_tokens": 52, "tile_grid": [3, 4], "placeholder_runs": 13},
        {"image_grid_thw": [9, 2, 2], "num_placeholder_tokens": 36, "tile_grid": [4, 2], "placeholder_runs": 9},
    ]
    out = materializer(processor, store).materialize(sample)

    # The processor's own call on the same text and images: the same ids, the same tiles in the same order.
    renderer = load_renderer(tiny_model_dir(FAMILY), store=store)
    content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": "What is it?"}]
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": "A picture."}]
    text = renderer.template_text(messages, add_generation_prompt=False)
    expected = processor(text=[text], images=[images], return_tensors="pt")
    assert expected["input_ids"][0].tolist() == list(sample.token_ids)
    assert sorted(out.pixel_kwargs) == ["pixel_attention_mask", "pixel_values"]
    assert out.pixel_kwargs["pixel_values"].shape == (22, 1, 3, 32, 32)
    assert torch.equal(out.pixel_kwargs["pixel_values"][:, 0], expected["pixel_values"][0])
    assert torch.equal(out.pixel_kwargs["pixel_attention_mask"][:, 0], expected["pixel_attention_mask"][0])
    image = processor.image_token_id
    assert all(sample.token_ids[ref.offset] == image for ref in sample.mm_refs)


def test_the_tiles_runs_are_checked_per_image(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    image = processor.image_token_id
    check_mm_refs(sample.token_ids, sample.mm_refs, image, "s")
    ids = list(sample.token_ids)
    ids[ids.index(image, sample.mm_refs[0].offset + 8)] = 5  # the third tile's run loses a placeholder
    with pytest.raises(PlaceholderMismatch) as caught:
        check_mm_refs(ids, sample.mm_refs, image, "s")
    assert caught.value.field == "sample 's'.mm_refs[0].span"


def test_an_unreadable_image_becomes_a_black_image_of_its_tiles_under_the_placeholder_policy(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(40, 130, 0), picture(90, 60, 2)])
    store.path_for(sample.mm_refs[1].descriptor.hash).unlink()
    out = materializer(processor, store, missing_image_policy="placeholder_zero_loss").materialize(sample)
    pixels = out.pixel_kwargs["pixel_values"]
    assert pixels.shape == (22, 1, 3, 32, 32) and pixels[:9].std() > 0.1
    # Normalized black, never all-zero: the model drops all-zero tiles as batch padding.
    assert torch.equal(pixels[9:], torch.full_like(pixels[9:], -1.0))
    assert out.missing_images == (1,) and out.sample_weight == 0.0 and not out.loss_weights.any()


def _with_payload(descriptor: RawImageDescriptor, **payload: Any) -> RawImageDescriptor:
    return descriptor.model_copy(update={"payload": {**descriptor.payload, **payload}})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image_grid_thw": [12, 2, 2]}, "descriptor.payload.image_grid_thw"),
        ({"tile_grid": [2, 3]}, "descriptor.payload.image_grid_thw"),
        ({"tile_grid": [7, 1], "image_grid_thw": [8, 2, 2], "num_placeholder_tokens": 32}, "length"),
        ({"placeholder_runs": 1}, "span"),
    ],
)
def test_a_payload_other_than_the_tiles_grid_is_refused(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore, change: Any, field: str
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    ref = sample.mm_refs[0]
    wrong = ref.model_copy(update={"descriptor": _with_payload(ref.descriptor, **change)})
    bad = sample.model_copy(update={"mm_refs": (wrong,)})
    with pytest.raises(PlaceholderMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == f"sample 's'.mm_refs[0].{field}"


def test_a_descriptor_of_other_smolvlm_settings_is_a_fingerprint_mismatch(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    other = SmolVLMLayoutSpec(family=FAMILY, longest_edge=96, tile_size=32, splitting=True, tokens_per_tile=4)
    descriptor = sample.mm_refs[0].descriptor
    moved = descriptor.model_copy(update={"layout_fingerprint": other.fingerprint})
    bad = sample.model_copy(update={"mm_refs": (sample.mm_refs[0].model_copy(update={"descriptor": moved}),)})
    with pytest.raises(FingerprintMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.layout_fingerprint"
    assert compute_layout(other, 90, 60).tile_grid == (2, 3)  # those settings would cut it differently


def test_pixel_bounds_and_other_families_processors_are_refused(
    processor: ProcessorMixin, tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    with pytest.raises(ContractError) as caught:
        image_adapter(FAMILY, processor, MultimodalConfig(max_pixels=56 * 56))
    assert caught.value.field == "multimodal.max_pixels"
    with pytest.raises(UnknownFamily):
        image_adapter(FAMILY, tiny_processor("gemma3"), MultimodalConfig())
    with pytest.raises(UnknownFamily):
        image_adapter("internvl", processor, MultimodalConfig())


@pytest.fixture(scope="module")
def smolvlm_model(load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model(FAMILY)


def _tokens(model: PreTrainedModel, tiles: int, text: int = 3) -> list[int]:
    """Text, then `tiles` runs of 4 placeholders each behind a separator token, then text."""
    run = [7, *[model.config.image_token_id] * 4]
    return [*range(20, 20 + text), *(run * tiles), *range(30, 30 + text)]


def test_smolvlm_positions_restart_at_every_sample_on_one_row(smolvlm_model: PreTrainedModel) -> None:
    scheme = position_scheme(smolvlm_model)
    assert isinstance(scheme, FixedTokenPositions) and scheme.rope_rows == 1 and scheme.tokens_per_image == 4

    def tiles(count: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.rand(count, 1, 3, 32, 32), "pixel_attention_mask": torch.ones(count, 1, 32, 32)}

    samples = [
        PackSample("a", _tokens(smolvlm_model, 1), [1.0] * 11, pixel_kwargs=tiles(1)),
        PackSample("b", _tokens(smolvlm_model, 5), [1.0] * 31, pixel_kwargs=tiles(5)),
        PackSample("c", [5, 6, 7], [1.0] * 3),
    ]
    batch = collate_packed(samples, scheme)
    assert batch.position_ids.tolist() == [[*range(11), *range(31), *range(3)]]
    assert batch.pixel_kwargs["pixel_values"].shape == (6, 1, 3, 32, 32)
    assert batch.pixel_kwargs["pixel_attention_mask"].shape == (6, 1, 32, 32)


@pytest.mark.parametrize(
    ("tiles", "token_tiles", "field"),
    [(1, 2, "sample 'x'.input_ids"), (3, 2, "sample 'x'.pixel_values")],
    ids=["more-runs-than-tiles", "more-tiles-than-runs"],
)
def test_smolvlm_positions_refuse_tiles_that_disagree_with_the_runs(
    smolvlm_model: PreTrainedModel, tiles: int, token_tiles: int, field: str
) -> None:
    tokens = torch.tensor(_tokens(smolvlm_model, token_tiles))
    pixels = {"pixel_values": torch.rand(tiles, 1, 3, 32, 32), "pixel_attention_mask": torch.ones(tiles, 1, 32, 32)}
    with pytest.raises(PlaceholderMismatch) as caught:
        position_scheme(smolvlm_model).sample_positions("x", tokens, pixels)
    assert caught.value.field == field
