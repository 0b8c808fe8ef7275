"""GLM-4.1V on the trainer's data side: materializing rendered images and numbering packed samples.

The tiny GLM-4.1V (real Glm4vProcessor and Glm4vForConditionalGeneration classes), the real renderer writing
descriptors into a real store, and real images of different sizes; the references are the processor's own
output and the model's own `get_rope_index`.
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
from foveal.renderers.errors import PlaceholderMismatch, UnknownFamily
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.adapters.mrope import MropePositions
from foveal.trainer.data.collate import collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask, sample_from_render

FAMILY = "glm4v"
QUESTION = "What is it?"


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)


@pytest.fixture(scope="module")
def processor(tiny_processor: Callable[[str], ProcessorMixin]) -> ProcessorMixin:
    return tiny_processor(FAMILY)


@pytest.fixture(scope="module")
def glm4v_model(load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model(FAMILY)


def messages(images: list[Any], with_pixels: bool = True) -> list[dict[str, Any]]:
    """A user turn with `images` (bare `{"type": "image"}` parts for the processor's template) and an answer."""
    parts = [{"type": "image", "image": image} if with_pixels else {"type": "image"} for image in images]
    content = [*parts, {"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": "A picture."}]


def rendered_sample(folder: Path, store: ImageStore, images: list[Image.Image], sample_id: str = "s") -> TrainingSample:
    """A user turn with `images` and a question, and the model's answer, through the real GLM-4.1V renderer."""
    renderer = load_renderer(folder, store=store)
    rendered = renderer.render(messages(images))
    weights = loss_weights_from_mask(rendered.loss_mask)
    return sample_from_render(rendered, renderer.image_token_id, sample_id, weights)


def processor_inputs(processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """The same conversation through Glm4vProcessor itself: chat template, placeholder expansion, pixels."""
    text = processor.apply_chat_template(messages(images, with_pixels=False), tokenize=False)
    return processor(text=[text], images=images or None, return_tensors="pt", return_mm_token_type_ids=True)


def materializer(processor: Any, store: ImageStore, **config: Any) -> Materializer:
    settings = MultimodalConfig(**config)
    adapter = image_adapter(FAMILY, processor, settings)
    return Materializer(adapter, store, missing_image_policy=settings.missing_image_policy)


def test_rendered_images_materialize_exactly_as_the_glm4v_processor_computes_them(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    images = [picture(90, 60, 0), picture(40, 130, 1), picture(300, 200, 2)]
    sample = rendered_sample(tiny_model_dir(FAMILY), store, images)
    out = materializer(processor, store).materialize(sample)
    expected = processor_inputs(processor, images)

    grids = expected["image_grid_thw"]
    assert len(set(map(tuple, grids.tolist()))) == 3  # three different grids
    assert [ref.descriptor.payload["image_grid_thw"] for ref in sample.mm_refs] == grids.tolist()
    assert sorted(out.pixel_kwargs) == ["image_grid_thw", "pixel_values"]
    assert torch.equal(out.pixel_kwargs["image_grid_thw"], grids)
    assert torch.equal(out.pixel_kwargs["pixel_values"], expected["pixel_values"])
    # The renderer's tokens are the processor's, `<|image|>` (its image_token_id) expanded per image.
    assert out.token_ids.tolist() == expected["input_ids"][0].tolist()
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image|>")
    assert processor.image_token_id == image_token
    assert all(sample.token_ids[ref.offset] == image_token for ref in sample.mm_refs)


def test_a_payload_whose_merged_grid_disagrees_with_its_placeholders_is_refused(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(90, 60, 0)])
    ref = sample.mm_refs[0]
    t, h, w = ref.descriptor.payload["image_grid_thw"]
    payload = {**ref.descriptor.payload, "image_grid_thw": [t, h + 2, w]}
    wrong = ref.model_copy(update={"descriptor": ref.descriptor.model_copy(update={"payload": payload})})
    with pytest.raises(PlaceholderMismatch) as caught:
        materializer(processor, store).materialize(sample.model_copy(update={"mm_refs": (wrong,)}))
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.payload.image_grid_thw"


def test_other_families_processors_are_refused(
    processor: ProcessorMixin, tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    with pytest.raises(UnknownFamily):
        image_adapter(FAMILY, tiny_processor("qwen2_vl"), MultimodalConfig())
    with pytest.raises(UnknownFamily):
        image_adapter("qwen2_vl", processor, MultimodalConfig())


def test_packed_positions_equal_the_models_own_rope_index_per_sample(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore, glm4v_model: PreTrainedModel
) -> None:
    scheme = position_scheme(glm4v_model)
    assert isinstance(scheme, MropePositions) and scheme.rope_rows == 3
    conversations = [[picture(90, 60, 0)], [picture(40, 130, 1), picture(64, 64, 2)], []]
    folder, materialize = tiny_model_dir(FAMILY), materializer(processor, store).materialize
    samples = [materialize(rendered_sample(folder, store, images, f"s{i}")) for i, images in enumerate(conversations)]
    batch = collate_packed(samples, scheme)
    assert batch.position_ids.shape == (4, 1, batch.num_tokens)

    for start, end, images in zip(batch.cu_seqlens[:-1], batch.cu_seqlens[1:], conversations, strict=True):
        own = processor_inputs(processor, images)
        ids, types = own["input_ids"], own["mm_token_type_ids"]
        rope, _ = glm4v_model.model.get_rope_index(
            ids, mm_token_type_ids=types, image_grid_thw=own.get("image_grid_thw")
        )
        assert torch.equal(batch.position_ids[1:, :, start:end], rope)
        assert batch.position_ids[0, 0, start:end].tolist() == list(range(end - start))
    # Images make the height row differ from the text row: the 3-D numbering is in use.
    assert not torch.equal(batch.position_ids[0], batch.position_ids[2])


def test_positions_refuse_a_sample_whose_placeholders_disagree_with_its_grid(
    processor: ProcessorMixin, glm4v_model: PreTrainedModel
) -> None:
    own = processor_inputs(processor, [picture(90, 60, 0)])
    ids = own["input_ids"][0]
    short = torch.cat([ids[:5], ids[6:]])  # one `<|image|>` fewer than the grid merges to
    pixels = {"pixel_values": own["pixel_values"], "image_grid_thw": own["image_grid_thw"]}
    with pytest.raises(PlaceholderMismatch) as caught:
        position_scheme(glm4v_model).sample_positions("x", short, pixels)
    assert caught.value.field == "sample 'x'.input_ids"
