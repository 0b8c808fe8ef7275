"""Materialization: a TrainingSample's MMRefs -> the pixel tensors its model consumes (docs/contract.md section 7).

Pixels are computed here, at train time, with the real processor loaded from the model folder, never
shipped. Each image is read hash-verified from the store; the processor's layout fingerprint must equal
the descriptor's, and the grid the processor produces must equal the recorded one, because the tokens
were expanded for that grid. A missing or corrupt file is a data problem the run may choose to survive
(`missing_image_policy = "placeholder_zero_loss"`: zero pixels of the recorded grid, the sample weighted
0, counted); a disagreeing fingerprint, grid or span is a setup bug and always raises.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from foveal.configs.multimodal import MissingImagePolicy, MultimodalConfig
from foveal.renderers.errors import ContractError, FingerprintMismatch, HashMismatch, ImageRejected, MissingAsset
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import ImageAdapter, ProcessedImage, concat_pixel_kwargs, image_adapter
from foveal.trainer.data.collate import Packable, PackSample
from foveal.trainer.data.mm_refs import MMRef, check_mm_refs, ref_field
from foveal.trainer.data.samples import TrainingSample

CORRUPT_IMAGE_ERRORS: tuple[type[ContractError], ...] = (MissingAsset, HashMismatch, ImageRejected)
"""What `placeholder_zero_loss` survives: the file is gone, its bytes changed (tampered, truncated), or
they no longer decode. A bad location, fingerprint or grid is never survived."""

CacheKey = tuple[str, str]
DEFAULT_CACHE_BYTES = 512 * 2**20


class PixelCache:
    """Thread-safe LRU of processed images by (image hash, adapter cache key), bounded by bytes and entries.

    Datasets repeat images (a shared system screenshot, RL groups sampling one prompt many times); the
    processor is the slow part of materializing them. Values are shared, so callers must not mutate them.
    A hit skips the file read: the key's hash names the verified bytes the pixels were computed from.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_entries: int | None = None) -> None:
        if max_bytes < 0 or (max_entries is not None and max_entries < 0):
            raise ContractError("pixel_cache", (max_bytes, max_entries), "non-negative bounds")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, ProcessedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> ProcessedImage | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: CacheKey, value: ProcessedImage) -> None:
        """Insert as most recent and evict the least recent until within bounds; too-large values are skipped."""
        if value.nbytes > self.max_bytes or self.max_entries == 0:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= old.nbytes if old is not None else 0
            self._entries[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes or (self.max_entries is not None and len(self) > self.max_entries):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries


class MaterializeMetrics:
    """Thread-safe counters a trainer logs: samples and images done, images replaced by zeros and why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        """A flat copy, e.g. {"samples": 10, "images": 14, "images_replaced": 1, "replaced.MissingAsset": 1}."""
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True, slots=True)
class MaterializedSample:
    """A sample ready to pack: token tensors, per-token fields, and the family's pixel kwargs.

    Field names follow the collate step's (`token_ids`, `loss_weights`, `logprobs`, `advantages`,
    `pixel_kwargs`). `missing_images` lists the image indices replaced by zeros; when
    any were, `sample_weight` and every loss weight are 0, so the sample adds nothing to the loss however
    the loss reads its weights.
    """

    sample_id: str
    token_ids: torch.Tensor
    """[L] int64."""
    loss_weights: torch.Tensor
    """[L] float32."""
    sample_weight: float
    logprobs: torch.Tensor | None
    """[L] float32 inference logprobs, if the sample carried them."""
    advantages: torch.Tensor | None
    pixel_kwargs: MappingProxyType[str, torch.Tensor]
    """The model's image kwargs, as the family's adapter names them; empty without images."""
    missing_images: tuple[int, ...] = ()


class Materializer:
    """Turns TrainingSamples into MaterializedSamples for one model; safe to call from several threads."""

    def __init__(
        self,
        adapter: ImageAdapter,
        store: ImageStore,
        *,
        missing_image_policy: MissingImagePolicy = "error",
        cache: PixelCache | None = None,
        metrics: MaterializeMetrics | None = None,
    ) -> None:
        if missing_image_policy not in ("error", "placeholder_zero_loss"):
            raise ContractError("missing_image_policy", missing_image_policy, "'error' or 'placeholder_zero_loss'")
        self.adapter = adapter
        self.store = store
        self.missing_image_policy: MissingImagePolicy = missing_image_policy
        self.cache = cache if cache is not None else PixelCache()
        self.metrics = metrics if metrics is not None else MaterializeMetrics()

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, family: str, store: ImageStore, config: MultimodalConfig, **options: Any
    ) -> Materializer:
        """Load the model folder's full processor (AutoProcessor) and bind `family`'s adapter to it."""
        from transformers import AutoProcessor  # heavy import, only where a processor is really loaded

        processor = AutoProcessor.from_pretrained(model_dir)
        adapter = image_adapter(family, processor, config)
        return cls(adapter, store, missing_image_policy=config.missing_image_policy, **options)

    def materialize(self, sample: TrainingSample) -> MaterializedSample:
        """Check spans against the image token, then read, verify and process each image in order."""
        check_mm_refs(sample.token_ids, sample.mm_refs, self.adapter.image_token_id, sample.sample_id)
        images, missing = [], []
        for index, ref in enumerate(sample.mm_refs):
            image, replaced = self._image(sample.sample_id, index, ref)
            images.append(image)
            if replaced:
                missing.append(index)
        self._count(sample, missing)
        return _materialized(sample, concat_pixel_kwargs([image.tensors for image in images]), tuple(missing))

    def _image(self, sample_id: str, index: int, ref: MMRef) -> tuple[ProcessedImage, bool]:
        """The processed image from the cache or the store, or (policy allowing) zeros; True if replaced."""
        field = ref_field(sample_id, index, "descriptor")
        self._check_fingerprint(ref, field)
        grid = self.adapter.check_payload(ref.descriptor.payload, field)
        key = (ref.descriptor.hash, self.adapter.cache_key)
        processed = self.cache.get(key)
        if processed is None:
            try:
                picture = self.store.open_verified(ref.descriptor.raw_image_uri, ref.descriptor.hash)
            except CORRUPT_IMAGE_ERRORS as error:
                if self.missing_image_policy == "error":
                    raise _located(error, field) from error
                self.metrics.add(f"replaced.{type(error).__name__}")
                return self.adapter.zeros(grid), True
            except ContractError as error:
                raise _located(error, field) from error
            processed = self.adapter.process(picture)
            self.cache.put(key, processed)
        self.adapter.check_grid(processed, grid, field)
        return processed, False

    def _check_fingerprint(self, ref: MMRef, field: str) -> None:
        descriptor, spec = ref.descriptor, self.adapter.spec
        if (descriptor.family, descriptor.layout_fingerprint) != (spec.family, spec.fingerprint):
            raise FingerprintMismatch(
                f"{field}.layout_fingerprint",
                f"{descriptor.family}:{descriptor.layout_fingerprint}",
                f"{spec.family}:{spec.fingerprint} (this trainer's processor with [multimodal] pixel bounds)",
            )

    def _count(self, sample: TrainingSample, missing: list[int]) -> None:
        self.metrics.add("samples")
        self.metrics.add("images", len(sample.mm_refs))
        if missing:
            self.metrics.add("images_replaced", len(missing))
            self.metrics.add("samples_zeroed")


def _materialized(
    sample: TrainingSample, pixel_kwargs: dict[str, torch.Tensor], missing: tuple[int, ...]
) -> MaterializedSample:
    weights = torch.tensor(sample.loss_weights, dtype=torch.float32)
    return MaterializedSample(
        sample_id=sample.sample_id,
        token_ids=torch.tensor(sample.token_ids, dtype=torch.long),
        loss_weights=weights.zero_() if missing else weights,
        sample_weight=0.0 if missing else sample.sample_weight,
        logprobs=_optional(sample.inference_logprobs),
        advantages=_optional(sample.advantages),
        pixel_kwargs=MappingProxyType(pixel_kwargs),
        missing_images=missing,
    )


def _optional(values: tuple[float, ...] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32)


def _located(error: ContractError, field: str) -> ContractError:
    """The same error class with its field placed under the sample and image it came from."""
    return error.restated(f"{field}.{error.field}")


def build_materializer(
    layout: str | None, processor: Any, store: ImageStore, multimodal: MultimodalConfig
) -> Callable[[TrainingSample], Packable]:
    """Pixels through the family's adapter for VLMs; text-only models pack their samples as they are."""
    if layout is None:
        return text_only_sample
    adapter = image_adapter(layout, processor, multimodal)
    return Materializer(adapter, store, missing_image_policy=multimodal.missing_image_policy).materialize


def text_only_sample(sample: TrainingSample) -> PackSample:
    """A sample of a text-only model packs as is: there are no pixels to materialize."""
    return PackSample(
        sample.sample_id,
        sample.token_ids,
        sample.loss_weights,
        logprobs=sample.inference_logprobs,
        advantages=sample.advantages,
        sample_weight=sample.sample_weight,
    )


