"""Gemma 3 on the trainer's data side: materializing rendered images and numbering packed samples.

The tiny Gemma 3 (real Gemma3Processor and Gemma3ForConditionalGeneration classes, 56 x 56 images, 4 soft tokens
per image), the real renderer writing descriptors into a real store, and real images of different sizes.
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
from foveal.renderers.layout import Gemma3LayoutSpec, compute_layout
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.adapters.fixed_tokens import FixedTokenPositions
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask, sample_from_render

FAMILY = "gemma3"


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
    """A user turn with `images` and a question, and the model's answer, through the real Gemma 3 renderer."""
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


def test_rendered_images_materialize_exactly_as_the_gemma3_processor_computes_them(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    images = [picture(90, 60, 0), picture(40, 130, 1)]
    sample = rendered_sample(tiny_model_dir(FAMILY), store, images)
    assert [ref.descriptor.payload for ref in sample.mm_refs] == [
        {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 4}
    ] * 2
    out = materializer(processor, store).materialize(sample)

    # The processor's own call on the same images (pan-and-scan off, as Gemma3Processor calls it).
    expected = processor(text=["<start_of_image><start_of_image>"], images=[images], return_tensors="pt")
    assert list(out.pixel_kwargs) == ["pixel_values"]
    assert out.pixel_kwargs["pixel_values"].shape == (2, 3, 56, 56)
    assert torch.equal(out.pixel_kwargs["pixel_values"], expected["pixel_values"])
    # The span token is <image_soft_token>, not Gemma3Processor.image_token_id (its <start_of_image>).
    soft = processor.tokenizer.image_token_id
    assert soft != processor.image_token_id
    assert all(sample.token_ids[ref.offset] == soft for ref in sample.mm_refs)


def test_an_unreadable_image_becomes_zero_pixels_of_the_fixed_size_under_the_placeholder_policy(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0), picture(64, 64, 2)])
    store.path_for(sample.mm_refs[1].descriptor.hash).unlink()
    out = materializer(processor, store, missing_image_policy="placeholder_zero_loss").materialize(sample)
    pixels = out.pixel_kwargs["pixel_values"]
    assert pixels.shape == (2, 3, 56, 56) and pixels[0].any() and not pixels[1].any()
    assert out.missing_images == (1,) and out.sample_weight == 0.0 and not out.loss_weights.any()


def _with_payload(descriptor: RawImageDescriptor, **payload: Any) -> RawImageDescriptor:
    return descriptor.model_copy(update={"payload": {**descriptor.payload, **payload}})


def test_a_payload_other_than_the_fixed_token_grid_is_refused(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    ref = sample.mm_refs[0]
    wrong = ref.model_copy(update={"descriptor": _with_payload(ref.descriptor, image_grid_thw=[1, 1, 4])})
    bad = sample.model_copy(update={"mm_refs": (wrong,)})
    with pytest.raises(PlaceholderMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.payload.image_grid_thw"


def test_a_descriptor_of_other_gemma3_settings_is_a_fingerprint_mismatch(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    other = Gemma3LayoutSpec(family=FAMILY, image_height=112, image_width=112, tokens_per_image=4)
    descriptor = sample.mm_refs[0].descriptor
    layout = compute_layout(other, 90, 60)
    moved = descriptor.model_copy(update={"layout_fingerprint": other.fingerprint, "payload": layout.payload()})
    bad = sample.model_copy(update={"mm_refs": (sample.mm_refs[0].model_copy(update={"descriptor": moved}),)})
    with pytest.raises(FingerprintMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.layout_fingerprint"


def test_pixel_bounds_and_other_families_processors_are_refused(
    processor: ProcessorMixin, tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    with pytest.raises(ContractError) as caught:
        image_adapter(FAMILY, processor, MultimodalConfig(max_pixels=56 * 56))
    assert caught.value.field == "multimodal.max_pixels"
    with pytest.raises(UnknownFamily):
        image_adapter(FAMILY, tiny_processor("qwen2_5_vl"), MultimodalConfig())
    with pytest.raises(UnknownFamily):
        image_adapter("qwen2_vl", processor, MultimodalConfig())


@pytest.fixture(scope="module")
def gemma3_model(load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model(FAMILY)


def _tokens(model: PreTrainedModel, images: int, text: int = 3) -> list[int]:
    """Text, then each image as begin-of-image, its soft tokens and end-of-image, then text."""
    config = model.config
    run = [config.boi_token_index, *[config.image_token_id] * config.mm_tokens_per_image, config.eoi_token_index]
    return [*range(20, 20 + text), *(run * images), *range(30, 30 + text)]


def test_gemma3_positions_restart_at_every_sample_on_one_row(gemma3_model: PreTrainedModel) -> None:
    scheme = position_scheme(gemma3_model)
    assert isinstance(scheme, FixedTokenPositions) and scheme.rope_rows == 1
    pixels = torch.zeros(1, 3, 56, 56)
    samples = [
        PackSample("a", _tokens(gemma3_model, 1), [1.0] * 12, pixel_kwargs={"pixel_values": pixels}),
        PackSample("b", _tokens(gemma3_model, 2), [1.0] * 18, pixel_kwargs={"pixel_values": pixels.repeat(2, 1, 1, 1)}),
        PackSample("c", [5, 6, 7], [1.0] * 3),
    ]
    batch = collate_packed(samples, scheme)
    assert batch.position_ids.tolist() == [[*range(12), *range(18), *range(3)]]
    assert batch.pixel_kwargs["pixel_values"].shape == (3, 3, 56, 56)


@pytest.mark.parametrize(
    ("images", "tokens_images", "field"),
    [(1, 2, "sample 'x'.input_ids"), (2, 1, "sample 'x'.pixel_values")],
    ids=["more-runs-than-images", "more-images-than-runs"],
)
def test_gemma3_positions_refuse_images_that_disagree_with_the_placeholders(
    gemma3_model: PreTrainedModel, images: int, tokens_images: int, field: str
) -> None:
    scheme = position_scheme(gemma3_model)
    tokens = torch.tensor(_tokens(gemma3_model, tokens_images))
    with pytest.raises(PlaceholderMismatch) as caught:
        scheme.sample_positions("x", tokens, {"pixel_values": torch.zeros(images, 3, 56, 56)})
    assert caught.value.field == field


def test_gemma3_positions_refuse_a_run_shorter_than_the_tokens_per_image(gemma3_model: PreTrainedModel) -> None:
    tokens = _tokens(gemma3_model, 1)
    tokens.remove(gemma3_model.config.image_token_id)
    pixels = {"pixel_values": torch.zeros(1, 3, 56, 56)}
    with pytest.raises(PlaceholderMismatch) as caught:
        position_scheme(gemma3_model).sample_positions("x", torch.tensor(tokens), pixels)
    assert caught.value.field == "sample 'x'.input_ids"
