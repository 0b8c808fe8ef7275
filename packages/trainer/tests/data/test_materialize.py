"""Materializing MMRefs with the real processors of tiny Qwen-VL models, against real files in a real store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import FingerprintMismatch, HashMismatch, MissingAsset, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import LayoutSpec, compute_layout, spec_from_image_processor, with_pixel_bounds
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import ProcessedImage, image_adapter
from foveal.trainer.data.materialize import MaterializedSample, Materializer, PixelCache
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.prefetch import Prefetcher
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.tiny_models import build_tiny_model

LAYOUT_FAMILY = {"qwen2_5_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl"}
SIZES = ((150, 100), (200, 300))  # (width, height): two images of different shapes
TEXT = (11, 12)


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Tiny model folders and their full processors, loaded as a trainer loads them."""
    root = tmp_path_factory.mktemp("tiny")
    folders = {name: build_tiny_model(name, root) for name in LAYOUT_FAMILY}
    return {name: (folder, AutoProcessor.from_pretrained(folder)) for name, folder in folders.items()}


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@dataclass
class World:
    """One model's processor, a fresh store, and the layout the renderer side would have used."""

    model: str
    folder: Path
    processor: Any
    store: ImageStore
    spec: LayoutSpec

    @property
    def family(self) -> str:
        return LAYOUT_FAMILY[self.model]

    def describe(self, image: Image.Image, spec: LayoutSpec | None = None) -> RawImageDescriptor:
        """What the renderer records for an image: store it, compute its layout."""
        spec = spec or self.spec
        stored = self.store.put(image)
        layout = compute_layout(spec, stored.width, stored.height)
        return RawImageDescriptor(
            raw_image_uri=stored.uri,
            hash=stored.hash,
            family=spec.family,
            layout_fingerprint=spec.fingerprint,
            payload=layout.payload(),
        )

    def sample(self, descriptors: list[RawImageDescriptor], sample_id: str = "s") -> TrainingSample:
        """Text, then each image framed by text, as a rendered conversation lays them out."""
        pad = self.processor.image_token_id
        tokens, spans = list(TEXT), []
        for desc in descriptors:
            count = int(desc.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
            spans.append((desc, (len(tokens), count)))
            tokens += [pad] * count + list(TEXT)
        refs = build_mm_refs(tokens, spans, pad, sample_id=sample_id)
        weights = [float(i % 2) for i in range(len(tokens))]
        return TrainingSample(sample_id=sample_id, token_ids=tokens, loss_weights=weights, mm_refs=refs)

    def materializer(self, config: MultimodalConfig | None = None, **options: Any) -> Materializer:
        config = config or MultimodalConfig()
        adapter = image_adapter(self.family, self.processor, config)
        return Materializer(adapter, self.store, missing_image_policy=config.missing_image_policy, **options)

    def reference(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """What the HF image processor gives for these images when called directly."""
        return dict(self.processor.image_processor(images=images, return_tensors="pt"))


def world(processors: dict[str, tuple[Path, Any]], tmp_path: Path, model: str = "qwen2_5_vl") -> World:
    folder, processor = processors[model]
    store = ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)
    spec = spec_from_image_processor(processor.image_processor, LAYOUT_FAMILY[model])
    return World(model, folder, processor, store, spec)


def two_image_sample(w: World) -> tuple[TrainingSample, list[Image.Image]]:
    images = [picture(width, height, seed) for seed, (width, height) in enumerate(SIZES)]
    return w.sample([w.describe(image) for image in images]), images


@pytest.mark.parametrize("model", list(LAYOUT_FAMILY))
def test_two_images_materialize_exactly_as_the_hf_processor_computes_them(processors, tmp_path, model) -> None:
    w = world(processors, tmp_path, model)
    sample, images = two_image_sample(w)
    out = w.materializer().materialize(sample)
    expected = w.reference(images)
    grids = out.pixel_kwargs["image_grid_thw"]
    assert grids.tolist() == expected["image_grid_thw"].tolist() and grids[0].tolist() != grids[1].tolist()
    assert torch.equal(out.pixel_kwargs["pixel_values"], expected["pixel_values"])
    assert out.token_ids.tolist() == list(sample.token_ids) and out.token_ids.dtype == torch.long
    assert out.loss_weights.tolist() == list(sample.loss_weights)
    assert (out.sample_weight, out.missing_images) == (1.0, ())


def test_from_pretrained_loads_the_processor_of_the_model_folder(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    sample, images = two_image_sample(w)
    materializer = Materializer.from_pretrained(w.folder, "qwen2_vl", w.store, MultimodalConfig())
    pixels = materializer.materialize(sample).pixel_kwargs["pixel_values"]
    assert torch.equal(pixels, w.reference(images)["pixel_values"])


def test_text_only_sample_has_no_pixel_kwargs(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    out = w.materializer().materialize(w.sample([]))
    assert dict(out.pixel_kwargs) == {} and out.token_ids.tolist() == list(TEXT)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # tampered: same length, one byte changed
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])


DAMAGE = {"missing": MissingAsset, "truncated": HashMismatch, "tampered": HashMismatch}


def stored_path(w: World, desc: RawImageDescriptor) -> Path:
    return w.store.path_for(desc.hash)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_file_raises_naming_sample_and_image_under_error_policy(processors, tmp_path, how) -> None:
    w = world(processors, tmp_path)
    sample, _ = two_image_sample(w)
    damage(stored_path(w, sample.mm_refs[1].descriptor), how)
    with pytest.raises(DAMAGE[how]) as caught:
        w.materializer().materialize(sample)
    assert caught.value.field.startswith("sample 's'.mm_refs[1].descriptor.")


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_file_becomes_zero_pixels_and_zero_weight_under_placeholder_policy(processors, tmp_path, how) -> None:
    w = world(processors, tmp_path)
    sample, images = two_image_sample(w)
    damage(stored_path(w, sample.mm_refs[1].descriptor), how)
    materializer = w.materializer(MultimodalConfig(missing_image_policy="placeholder_zero_loss"))
    out = materializer.materialize(sample)

    first, second = w.reference([images[0]]), w.reference([images[1]])
    rows = len(first["pixel_values"])
    pixels, grids = out.pixel_kwargs["pixel_values"], out.pixel_kwargs["image_grid_thw"]
    assert pixels.shape == (rows + len(second["pixel_values"]), second["pixel_values"].shape[1])
    assert torch.equal(pixels[:rows], first["pixel_values"])
    assert not pixels[rows:].any()
    assert grids.tolist() == [first["image_grid_thw"][0].tolist(), second["image_grid_thw"][0].tolist()]
    assert out.sample_weight == 0.0 and not out.loss_weights.any() and out.missing_images == (1,)
    counts = materializer.metrics.snapshot()
    assert counts["images_replaced"] == 1 and counts["samples_zeroed"] == 1
    assert counts[f"replaced.{DAMAGE[how].__name__}"] == 1


def test_intact_samples_are_not_counted_as_replaced(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    sample, _ = two_image_sample(w)
    materializer = w.materializer(MultimodalConfig(missing_image_policy="placeholder_zero_loss"))
    materializer.materialize(sample)
    assert materializer.metrics.snapshot() == {"samples": 1, "images": 2}


def test_trainer_processor_with_other_max_pixels_is_a_fingerprint_mismatch(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    sample, _ = two_image_sample(w)
    smaller = MultimodalConfig(max_pixels=w.spec.max_pixels // 2)
    with pytest.raises(FingerprintMismatch) as caught:
        w.materializer(smaller).materialize(sample)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.layout_fingerprint"


def test_descriptor_rendered_with_other_max_pixels_is_a_fingerprint_mismatch(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    image = picture(*SIZES[1], seed=1)
    renderer_spec = with_pixel_bounds(w.spec, None, w.spec.max_pixels // 4)
    with pytest.raises(FingerprintMismatch):
        w.materializer().materialize(w.sample([w.describe(image, renderer_spec)]))


def test_matching_pixel_bound_overrides_on_both_sides_materialize(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    image = picture(*SIZES[1], seed=1)
    bound = w.spec.max_pixels // 4
    out = w.materializer(MultimodalConfig(max_pixels=bound)).materialize(
        w.sample([w.describe(image, with_pixel_bounds(w.spec, None, bound))])
    )
    expected = w.processor.image_processor(
        images=[image], return_tensors="pt", size={"shortest_edge": w.spec.min_pixels, "longest_edge": bound}
    )
    assert torch.equal(out.pixel_kwargs["pixel_values"], expected["pixel_values"])
    assert out.pixel_kwargs["image_grid_thw"].prod() < w.reference([image])["image_grid_thw"].prod()


def test_recorded_grid_other_than_the_processors_is_rejected(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    real = w.describe(picture(*SIZES[1], seed=1))
    t, h, width = real.payload["image_grid_thw"]  # type: ignore[misc]
    assert h != width
    swapped = real.model_copy(update={"payload": {**real.payload, "image_grid_thw": [t, width, h]}})
    with pytest.raises(PlaceholderMismatch) as caught:
        w.materializer().materialize(w.sample([swapped]))
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.payload.image_grid_thw"


def test_grid_that_does_not_merge_to_the_placeholder_count_is_rejected(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    real = w.describe(picture(*SIZES[0], seed=0))
    count = int(real.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
    wrong = real.model_copy(update={"payload": {**real.payload, "num_placeholder_tokens": count + 1}})
    with pytest.raises(PlaceholderMismatch, match="merged"):
        w.materializer(MultimodalConfig(missing_image_policy="placeholder_zero_loss")).materialize(w.sample([wrong]))


def test_span_of_tokens_other_than_this_processors_image_token_is_rejected(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    desc = w.describe(picture(*SIZES[0], seed=0))
    count = int(desc.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
    other = w.processor.image_token_id + 1
    tokens = [*TEXT, *[other] * count, *TEXT]
    refs = build_mm_refs(tokens, [(desc, (len(TEXT), count))], other)
    sample = TrainingSample(sample_id="s", token_ids=tokens, loss_weights=[1.0] * len(tokens), mm_refs=refs)
    with pytest.raises(PlaceholderMismatch) as caught:
        w.materializer().materialize(sample)
    assert caught.value.field == "sample 's'.mm_refs[0].span"


def test_processor_of_another_family_is_refused(processors) -> None:
    _, qwen3_processor = processors["qwen3_vl"]
    with pytest.raises(UnknownFamily):
        image_adapter("qwen2_vl", qwen3_processor, MultimodalConfig())
    with pytest.raises(UnknownFamily):
        image_adapter("llava", qwen3_processor, MultimodalConfig())


def test_repeated_image_is_processed_once_and_served_from_the_cache(processors, tmp_path, monkeypatch) -> None:
    w = world(processors, tmp_path)
    image = picture(*SIZES[0], seed=0)
    desc = w.describe(image)
    materializer = w.materializer()
    calls: list[tuple[int, int]] = []
    process = materializer.adapter.process
    monkeypatch.setattr(materializer.adapter, "process", lambda img: calls.append(img.size) or process(img))

    first = materializer.materialize(w.sample([desc, desc], "a"))
    second = materializer.materialize(w.sample([desc], "b"))
    assert calls == [image.size]
    assert (materializer.cache.hits, materializer.cache.misses) == (2, 1)
    single = w.reference([image])["pixel_values"]
    assert torch.equal(first.pixel_kwargs["pixel_values"], torch.cat([single, single]))
    assert torch.equal(second.pixel_kwargs["pixel_values"], single)


def test_cached_pixels_are_not_aliased_into_samples(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    desc = w.describe(picture(*SIZES[0], seed=0))
    materializer = w.materializer()
    materializer.materialize(w.sample([desc])).pixel_kwargs["pixel_values"].zero_()
    assert materializer.materialize(w.sample([desc])).pixel_kwargs["pixel_values"].any()


def processed(rows: int) -> ProcessedImage:
    return ProcessedImage({"pixel_values": torch.ones(rows, 4)}, (1, rows, 1))


def test_cache_evicts_the_least_recently_used_entry_beyond_its_entry_bound() -> None:
    cache = PixelCache(max_entries=2)
    cache.put(("a", "k"), processed(1))
    cache.put(("b", "k"), processed(1))
    assert cache.get(("a", "k")) is not None
    cache.put(("c", "k"), processed(1))
    assert ("a", "k") in cache and ("c", "k") in cache and ("b", "k") not in cache


def test_cache_stays_within_its_byte_bound() -> None:
    one = processed(4).nbytes
    cache = PixelCache(max_bytes=2 * one)
    for name in "abc":
        cache.put((name, "k"), processed(4))
    assert cache.nbytes == 2 * one and len(cache) == 2 and ("a", "k") not in cache
    cache.put(("huge", "k"), processed(12))
    assert ("huge", "k") not in cache and len(cache) == 2


def test_cache_accounting_holds_under_concurrent_use() -> None:
    cache = PixelCache(max_bytes=10 * processed(2).nbytes)

    def churn(worker: int) -> None:
        for i in range(300):
            cache.put((f"{worker}-{i % 17}", "k"), processed(1 + i % 3))
            cache.get((f"{(worker + 1) % 4}-{i % 17}", "k"))

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.nbytes == sum(v.nbytes for v in cache._entries.values()) <= cache.max_bytes


def test_prefetched_materialization_keeps_sample_order(processors, tmp_path) -> None:
    w = world(processors, tmp_path)
    descs = [w.describe(picture(*SIZES[i % 2], seed=i)) for i in range(6)]
    samples = [w.sample([descs[i]], f"s{i}") for i in range(6)]
    materializer = w.materializer()
    with Prefetcher(samples, materializer.materialize, workers=2, depth=3) as prefetched:
        out: list[MaterializedSample] = list(prefetched)
    assert [o.sample_id for o in out] == [s.sample_id for s in samples]
    for o, s in zip(out, samples, strict=True):
        again = materializer.materialize(s).pixel_kwargs["pixel_values"]
        assert torch.equal(o.pixel_kwargs["pixel_values"], again)
