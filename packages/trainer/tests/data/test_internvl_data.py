"""InternVL 3.5 on the trainer's data side: materializing rendered images as tiles and numbering packed samples.

The tiny InternVL (real InternVLProcessor, GOT-OCR2 image processor and InternVLForConditionalGeneration classes,
28 px tiles, 4 tokens a tile, 1..12 tiles plus a thumbnail), the real renderer writing descriptors into a real
store, and real images of different sizes and tile counts; the reference is the processor's own output.
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
from foveal.renderers.layout import InternVLLayoutSpec, compute_layout
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.adapters.tiles import TiledTokenPositions
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask, sample_from_render

FAMILY = "internvl"
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
def internvl_model(load_tiny_model: Callable[[str], PreTrainedModel]) -> PreTrainedModel:
    return load_tiny_model(FAMILY)


def messages(images: list[Any]) -> list[dict[str, Any]]:
    content = [*({"type": "image", "image": image} for image in images), {"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": "A picture."}]


def rendered_sample(folder: Path, store: ImageStore, images: list[Image.Image], sample_id: str = "s") -> TrainingSample:
    renderer = load_renderer(folder, store=store)
    rendered = renderer.render(messages(images))
    return sample_from_render(rendered, renderer.image_token_id, sample_id, loss_weights_from_mask(rendered.loss_mask))


def materializer(processor: Any, store: ImageStore, **config: Any) -> Materializer:
    settings = MultimodalConfig(**config)
    adapter = image_adapter(FAMILY, processor, settings)
    return Materializer(adapter, store, missing_image_policy=settings.missing_image_policy)


# 100 x 40: 5 x 2 tiles + thumbnail = 11; 30 x 90: 1 x 3 + thumbnail = 4; 20 x 20: one tile, no thumbnail.
SIZES = [((100, 40), 11, [2, 5]), ((30, 90), 4, [3, 1]), ((20, 20), 1, [1, 1])]


def test_rendered_images_materialize_exactly_as_the_internvl_processor_computes_them(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    images = [picture(*size, seed) for seed, (size, _, _) in enumerate(SIZES)]
    sample = rendered_sample(tiny_model_dir(FAMILY), store, images)
    assert [ref.descriptor.payload for ref in sample.mm_refs] == [
        {"image_grid_thw": [tiles, 2, 2], "num_placeholder_tokens": 4 * tiles, "tile_grid": grid}
        for _, tiles, grid in SIZES
    ]
    out = materializer(processor, store).materialize(sample)

    # The processor's own call on the same conversation (its template, tiling and thumbnail).
    expected = processor.apply_chat_template(messages(images), tokenize=True, return_dict=True, return_tensors="pt")
    assert list(sample.token_ids) == expected["input_ids"][0].tolist()
    assert list(out.pixel_kwargs) == ["pixel_values"]
    assert out.pixel_kwargs["pixel_values"].shape == (11 + 4 + 1, 3, 28, 28)
    assert torch.equal(out.pixel_kwargs["pixel_values"], expected["pixel_values"])
    assert all(sample.token_ids[ref.offset] == processor.image_token_id for ref in sample.mm_refs)


def test_an_unreadable_image_becomes_zero_tiles_of_its_count_under_the_placeholder_policy(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(100, 40, 0), picture(30, 90, 1)])
    store.path_for(sample.mm_refs[1].descriptor.hash).unlink()
    out = materializer(processor, store, missing_image_policy="placeholder_zero_loss").materialize(sample)
    pixels = out.pixel_kwargs["pixel_values"]
    assert pixels.shape == (11 + 4, 3, 28, 28) and pixels[:11].any() and not pixels[11:].any()
    assert out.missing_images == (1,) and out.sample_weight == 0.0 and not out.loss_weights.any()


def _with_payload(descriptor: RawImageDescriptor, **payload: Any) -> RawImageDescriptor:
    return descriptor.model_copy(update={"payload": {**descriptor.payload, **payload}})


@pytest.mark.parametrize(
    "payload",
    [
        {"image_grid_thw": [10, 2, 2]},  # one tile short of 5 x 2 plus thumbnail
        {"image_grid_thw": [11, 1, 4]},  # not the square token grid of a tile
        {"tile_grid": [2, 7]},  # 14 tiles: over max_patches
        {"tile_grid": None},
    ],
    ids=["tiles", "token-grid", "arrangement", "no-arrangement"],
)
def test_a_payload_other_than_its_arrangements_tiles_is_refused(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore, payload: dict[str, Any]
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(100, 40, 0)])
    ref = sample.mm_refs[0]
    wrong = ref.model_copy(update={"descriptor": _with_payload(ref.descriptor, **payload)})
    bad = sample.model_copy(update={"mm_refs": (wrong,)})
    with pytest.raises(PlaceholderMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.payload.image_grid_thw"


def test_a_payload_the_processor_tiles_otherwise_is_refused(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    """A consistent payload (2 x 2 tiles + thumbnail, 20 tokens) for an image the processor cuts into 11 tiles."""
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(100, 40, 0)])
    ref = sample.mm_refs[0]
    payload = {"image_grid_thw": [5, 2, 2], "num_placeholder_tokens": 20, "tile_grid": [2, 2]}
    tokens = [*sample.token_ids[: ref.offset], *[processor.image_token_id] * 20, *sample.token_ids[ref.offset + 44 :]]
    moved = ref.model_copy(update={"descriptor": _with_payload(ref.descriptor, **payload), "length": 20})
    bad = TrainingSample(sample_id="s", token_ids=tokens, loss_weights=(0.0,) * len(tokens), mm_refs=(moved,))
    with pytest.raises(PlaceholderMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.payload.image_grid_thw"
    assert "[11, 3, 28, 28]" in str(caught.value.value)


def test_a_descriptor_of_other_internvl_settings_is_a_fingerprint_mismatch(
    tiny_model_dir: Callable[[str], Path], processor: ProcessorMixin, store: ImageStore
) -> None:
    sample = rendered_sample(tiny_model_dir(FAMILY), store, [picture(20, 20, 0)])
    tiles = {"tile_height": 28, "tile_width": 28, "min_tiles": 1, "max_tiles": 6, "tokens_per_tile": 4}
    other = InternVLLayoutSpec(family=FAMILY, **tiles)
    moved = sample.mm_refs[0].descriptor.model_copy(
        update={"layout_fingerprint": other.fingerprint, "payload": compute_layout(other, 20, 20).payload()}
    )
    bad = sample.model_copy(update={"mm_refs": (sample.mm_refs[0].model_copy(update={"descriptor": moved}),)})
    with pytest.raises(FingerprintMismatch) as caught:
        materializer(processor, store).materialize(bad)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.layout_fingerprint"


def test_pixel_bounds_and_other_families_processors_are_refused(
    processor: ProcessorMixin, tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    with pytest.raises(ContractError) as caught:
        image_adapter(FAMILY, processor, MultimodalConfig(min_pixels=28 * 28))
    assert caught.value.field == "multimodal.min_pixels"
    with pytest.raises(UnknownFamily):
        image_adapter(FAMILY, tiny_processor("qwen3_vl"), MultimodalConfig())
    with pytest.raises(UnknownFamily):
        image_adapter("qwen3_vl", processor, MultimodalConfig())


def _tokens(model: PreTrainedModel, *tiles: int) -> list[int]:
    """Text, then each image as `<img>`, its tiles' placeholders and `</img>`, then text."""
    config, start, end = model.config, 20, 21  # any two text ids frame the runs
    runs = [[start, *[config.image_token_id] * (config.image_seq_length * count), end] for count in tiles]
    return [30, 31, *(token for run in runs for token in run), 32]


def test_internvl_positions_restart_at_every_sample_on_one_row(
    internvl_model: PreTrainedModel, processor: ProcessorMixin
) -> None:
    scheme = position_scheme(internvl_model)
    assert isinstance(scheme, TiledTokenPositions) and scheme.rope_rows == 1
    assert scheme.image_token_id == internvl_model.config.image_token_id and scheme.tokens_per_tile == 4
    # The adapter's span token (the processor's <IMG_CONTEXT>) is the model config's placeholder.
    assert image_adapter(FAMILY, processor, MultimodalConfig()).image_token_id == internvl_model.config.image_token_id
    a, b = _tokens(internvl_model, 5), _tokens(internvl_model, 1, 11)
    samples = [
        PackSample("a", a, [1.0] * len(a), pixel_kwargs={"pixel_values": torch.zeros(5, 3, 28, 28)}),
        PackSample("b", b, [1.0] * len(b), pixel_kwargs={"pixel_values": torch.zeros(12, 3, 28, 28)}),
        PackSample("c", [5, 6, 7], [1.0] * 3),
    ]
    batch = collate_packed(samples, scheme)
    assert batch.position_ids.tolist() == [[*range(len(a)), *range(len(b)), *range(3)]]
    assert batch.pixel_kwargs["pixel_values"].shape == (17, 3, 28, 28)


@pytest.mark.parametrize(
    ("tiles", "rows"),
    [((5,), 4), ((5,), 6), ((2, 3), 4)],
    ids=["fewer-tiles-than-placeholders", "more-tiles-than-placeholders", "two-images"],
)
def test_internvl_positions_refuse_tiles_that_disagree_with_the_placeholders(
    internvl_model: PreTrainedModel, tiles: tuple[int, ...], rows: int
) -> None:
    tokens = torch.tensor(_tokens(internvl_model, *tiles))
    with pytest.raises(PlaceholderMismatch) as caught:
        position_scheme(internvl_model).sample_positions("x", tokens, {"pixel_values": torch.zeros(rows, 3, 28, 28)})
    assert caught.value.field == "sample 'x'.pixel_values"


def test_internvl_positions_refuse_a_run_that_is_not_whole_tiles(internvl_model: PreTrainedModel) -> None:
    tokens = _tokens(internvl_model, 2)
    tokens.remove(internvl_model.config.image_token_id)
    with pytest.raises(PlaceholderMismatch) as caught:
        position_scheme(internvl_model).sample_positions(
            "x", torch.tensor(tokens), {"pixel_values": torch.zeros(2, 3, 28, 28)}
        )
    assert caught.value.field == "sample 'x'.input_ids" and "a run of 7" in str(caught.value.value)
