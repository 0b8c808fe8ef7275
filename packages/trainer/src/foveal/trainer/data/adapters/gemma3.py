"""`gemma3`: Gemma 3 with vision, whose processor resizes every image to one fixed size.

One image is `pixel_values` `[1, 3, H, W]` at the image processor's fixed `size` (896 x 896 in the released
checkpoints); SigLIP cuts it into patches inside the model and the projector pools them to `image_seq_length`
soft tokens, so the model's forward takes `pixel_values` alone (images stacked on the first dimension) and no
grid. The descriptor's grid is the pooled token grid `[1, s, s]` with `s * s` equal to the placeholder count
(merge size 1, `foveal.renderers.layout.gemma3`); a processed image has that grid when its pixels have the
fixed size the fingerprint records.

The placeholder is `<image_soft_token>` (the tokenizer's `image_token_id`). Gemma3Processor's own
`image_token_id` attribute is the begin-of-image token (`<start_of_image>`, transformers 5.19), so it is not
read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ContractError, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import Gemma3LayoutSpec, spec_from_image_processor, with_pixel_bounds
from foveal.trainer.data.adapters.base import Grid, ProcessedImage

FAMILY = "gemma3"
PROCESSOR_CLASSES = frozenset({"Gemma3Processor"})


class Gemma3Adapter:
    """Gemma 3 image adapter bound to one loaded processor (`AutoProcessor.from_pretrained(model_dir)`)."""

    def __init__(self, processor: Any, config: MultimodalConfig) -> None:
        names = {cls.__name__ for cls in type(processor).__mro__}
        if names.isdisjoint(PROCESSOR_CLASSES):
            expected = f"a {FAMILY} processor, one of {sorted(PROCESSOR_CLASSES)}"
            raise UnknownFamily("processor", type(processor).__name__, expected)
        self.family = FAMILY
        self.image_processor = processor.image_processor
        settings = {"image_seq_length": processor.image_seq_length}
        base = spec_from_image_processor(self.image_processor, FAMILY, settings)
        # Refuses [multimodal] pixel bounds: they mean nothing for a fixed image size.
        spec = with_pixel_bounds(base, config.min_pixels, config.max_pixels)
        if not isinstance(spec, Gemma3LayoutSpec):
            raise ContractError("layout", type(spec).__name__, "a Gemma3LayoutSpec (Gemma 3's fixed image size)")
        self.spec = spec
        self.image_token_id = _soft_token_id(processor)
        digest = xxhash.xxh3_64_hexdigest(self.image_processor.to_json_string().encode())
        self.cache_key = f"{self.spec.fingerprint}:{digest}"
        self._grid: Grid = (1, self.spec.tokens_per_side, self.spec.tokens_per_side)

    def check_payload(self, payload: Mapping[str, Any], field: str) -> Grid:
        """The recorded grid, if it is the square token grid this processor writes: `[1, s, s]`, `s * s` tokens."""
        grid = tuple(int(x) for x in payload["image_grid_thw"])
        if grid != self._grid or payload["num_placeholder_tokens"] != self.spec.tokens_per_image:
            expected = f"{list(self._grid)} with {self.spec.tokens_per_image} placeholder tokens (image_seq_length)"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)
        return self._grid

    def process(self, image: Image.Image) -> ProcessedImage:
        """The real image processor without pan-and-scan crops: one `[1, 3, H, W]` image."""
        out = self.image_processor(images=[image], return_tensors="pt", do_pan_and_scan=False)
        pixels = out["pixel_values"]
        return ProcessedImage({"pixel_values": pixels}, self._grid_of(pixels))

    def zeros(self, grid: Grid) -> ProcessedImage:
        channels = len(self.image_processor.image_mean)
        pixels = torch.zeros(1, channels, self.spec.image_height, self.spec.image_width, dtype=torch.float32)
        return ProcessedImage({"pixel_values": pixels}, tuple(grid))  # type: ignore[arg-type]

    def check_grid(self, processed: ProcessedImage, grid: Grid, field: str) -> None:
        """The processor made one image of the fixed size, so the placeholders were laid out for its grid."""
        if processed.grid != grid:
            shape = list(processed.tensors["pixel_values"].shape)
            expected = f"{list(grid)}: one image of {self.spec.image_height} x {self.spec.image_width} pixels"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", f"pixel_values of shape {shape}", expected)

    def _grid_of(self, pixels: torch.Tensor) -> Grid:
        """The token grid of processed pixels: the fingerprinted one for one image of the fixed size, else (0, 0, 0)
        (which no payload has, so `check_grid` refuses it)."""
        fixed = (1, len(self.image_processor.image_mean), self.spec.image_height, self.spec.image_width)
        return self._grid if tuple(pixels.shape) == fixed else (0, 0, 0)


def gemma3_adapter(processor: Any, config: MultimodalConfig) -> Gemma3Adapter:
    return Gemma3Adapter(processor, config)


def _soft_token_id(processor: Any) -> int:
    token_id = getattr(processor.tokenizer, "image_token_id", None)
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ContractError("processor.tokenizer.image_token_id", token_id, "the id of <image_soft_token>")
    return token_id
