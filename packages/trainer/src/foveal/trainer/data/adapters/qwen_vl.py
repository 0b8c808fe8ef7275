"""The image adapter shared by the Qwen-VL families, which all run transformers' `Qwen2VLImageProcessor`, and by
GLM-4.1V, whose `Glm4vImageProcessor` cuts the same patch grid after its own resize.

The families differ in processor class and settings (patch 14 vs 16), not in mechanics: one image
becomes `t*h*w` rows of `channels * temporal_patch * patch * patch` values and a grid, and the model
takes `pixel_values` (rows of all images, concatenated) and `image_grid_thw` (one row per image).
`qwen2_vl.py`, `qwen3_vl.py` and `glm4v.py` name which processors belong to which family; `mrope.py` numbers
the tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ContractError, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import spec_from_image_processor, with_pixel_bounds
from foveal.trainer.data.adapters.base import Grid, ProcessedImage


@dataclass(frozen=True, slots=True)
class QwenVLFamily:
    """A Qwen-VL layout family and the full-processor classes (HF names) that belong to it."""

    name: str
    processor_classes: frozenset[str]


class QwenVLAdapter:
    """Qwen-VL image adapter bound to one loaded processor (`AutoProcessor.from_pretrained(model_dir)`)."""

    def __init__(self, family: QwenVLFamily, processor: Any, config: MultimodalConfig) -> None:
        _check_processor_class(processor, family)
        self.family = family.name
        self.image_processor = processor.image_processor
        base = spec_from_image_processor(self.image_processor, family.name)
        self.spec = with_pixel_bounds(base, config.min_pixels, config.max_pixels)
        self.image_token_id = _image_token_id(processor)
        self.cache_key = f"{self.spec.fingerprint}:{_normalization_digest(self.image_processor)}"
        # Passed on every call so the processor resizes with exactly the fingerprinted bounds.
        self._size = {"shortest_edge": self.spec.min_pixels, "longest_edge": self.spec.max_pixels}

    def check_payload(self, payload: Mapping[str, Any], field: str) -> Grid:
        """The recorded grid, if the 2x2 (merge x merge) token merge turns it into the recorded count."""
        grid = tuple(int(x) for x in payload["image_grid_thw"])
        t, h, w = grid
        merge = self.spec.merge_size
        tokens = t * h * w // merge**2
        if h % merge or w % merge or tokens != payload["num_placeholder_tokens"]:
            expected = f"a grid whose {merge}x{merge}-merged size equals num_placeholder_tokens"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)
        return grid  # type: ignore[return-value]

    def process(self, image: Image.Image) -> ProcessedImage:
        out = self.image_processor(images=[image], return_tensors="pt", size=self._size)
        grid = tuple(int(x) for x in out["image_grid_thw"][0])
        return _image(out["pixel_values"], grid)  # type: ignore[arg-type]

    def zeros(self, grid: Grid) -> ProcessedImage:
        t, h, w = grid
        channels = len(self.image_processor.image_mean)
        width = channels * self.spec.temporal_patch_size * self.spec.patch_size**2
        return _image(torch.zeros(t * h * w, width, dtype=torch.float32), tuple(grid))  # type: ignore[arg-type]

    def check_grid(self, processed: ProcessedImage, grid: Grid, field: str) -> None:
        if processed.grid != grid:
            expected = f"{list(processed.grid)}, the grid this trainer's processor produces"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)


def _image(pixel_values: torch.Tensor, grid: Grid) -> ProcessedImage:
    return ProcessedImage({"pixel_values": pixel_values, "image_grid_thw": torch.tensor([grid])}, grid)


def _check_processor_class(processor: Any, family: QwenVLFamily) -> None:
    """A full processor of this family: an image processor alone has no image token to check spans by."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    if names.isdisjoint(family.processor_classes):
        expected = f"a {family.name} processor, one of {sorted(family.processor_classes)}"
        raise UnknownFamily("processor", type(processor).__name__, expected)


def _image_token_id(processor: Any) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ContractError("processor.image_token_id", token_id, "the id of the image placeholder token")
    return token_id


def _normalization_digest(image_processor: Any) -> str:
    """Hash of the processor's whole saved config: mean/std/rescale change pixels but not the fingerprint."""
    return xxhash.xxh3_64_hexdigest(image_processor.to_json_string().encode())
