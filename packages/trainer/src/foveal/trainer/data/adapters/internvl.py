"""`internvl`: InternVL 3.5 (HF format), whose processor cuts every image into fixed-size tiles plus a thumbnail.

InternVLProcessor runs its GOT-OCR2 image processor with `crop_to_patches=True` (its own default, which wins
over the `crop_to_patches: false` of preprocessor_config.json): one image becomes `pixel_values`
`[tiles, 3, H, W]`, its tiles in row-major order and then the thumbnail when there is more than one tile. The
model takes `pixel_values` alone (every image's tiles, concatenated) and scatters `image_seq_length` tokens per
tile, in order, over the `<IMG_CONTEXT>` placeholders. The descriptor's grid counts tiles (`[tiles, s, s]`,
`s * s = image_seq_length`) and `tile_grid` records the arrangement (`foveal.renderers.layout.internvl`); a
processed image has that grid when the processor made `tiles` tiles of the fingerprinted size.

The placeholder is `<IMG_CONTEXT>` (InternVLProcessor's `image_token_id`, the model config's `image_token_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ContractError, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import InternVLLayoutSpec, spec_from_image_processor, with_pixel_bounds
from foveal.trainer.data.adapters.base import Grid, ProcessedImage

FAMILY = "internvl"
PROCESSOR_CLASSES = frozenset({"InternVLProcessor"})


class InternVLAdapter:
    """InternVL image adapter bound to one loaded processor (`AutoProcessor.from_pretrained(model_dir)`)."""

    def __init__(self, processor: Any, config: MultimodalConfig) -> None:
        names = {cls.__name__ for cls in type(processor).__mro__}
        if names.isdisjoint(PROCESSOR_CLASSES):
            expected = f"a {FAMILY} processor, one of {sorted(PROCESSOR_CLASSES)}"
            raise UnknownFamily("processor", type(processor).__name__, expected)
        self.family = FAMILY
        self.image_processor = processor.image_processor
        settings = {"image_seq_length": processor.image_seq_length}
        base = spec_from_image_processor(self.image_processor, FAMILY, settings)
        # Refuses [multimodal] pixel bounds: every tile has one fixed size.
        spec = with_pixel_bounds(base, config.min_pixels, config.max_pixels)
        if not isinstance(spec, InternVLLayoutSpec):
            raise ContractError("layout", type(spec).__name__, "an InternVLLayoutSpec (InternVL's tiling settings)")
        self.spec = spec
        self.image_token_id = _image_token_id(processor)
        digest = xxhash.xxh3_64_hexdigest(self.image_processor.to_json_string().encode())
        self.cache_key = f"{self.spec.fingerprint}:{digest}"

    def check_payload(self, payload: Mapping[str, Any], field: str) -> Grid:
        """The recorded grid, if it is `[tiles, s, s]` for an arrangement this processor can make and its count is
        `tiles * image_seq_length`."""
        grid = tuple(int(x) for x in payload["image_grid_thw"])
        side = self.spec.tokens_per_side
        tiles = self._tiles_of(payload.get("tile_grid"))
        if grid != (tiles, side, side) or payload["num_placeholder_tokens"] != tiles * self.spec.tokens_per_tile:
            expected = (
                f"[{tiles}, {side}, {side}] with {tiles * self.spec.tokens_per_tile} placeholder tokens "
                f"(the tiles of tile_grid {payload.get('tile_grid')}, plus a thumbnail when more than one)"
            )
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)
        return grid  # type: ignore[return-value]

    def process(self, image: Image.Image) -> ProcessedImage:
        """The real image processor as InternVLProcessor runs it (tiles plus thumbnail): `[tiles, 3, H, W]`."""
        out = self.image_processor(images=[image], return_tensors="pt", crop_to_patches=True)
        pixels = out["pixel_values"]
        return ProcessedImage({"pixel_values": pixels}, self._grid_of(pixels))

    def zeros(self, grid: Grid) -> ProcessedImage:
        channels = len(self.image_processor.image_mean)
        pixels = torch.zeros(grid[0], channels, self.spec.tile_height, self.spec.tile_width, dtype=torch.float32)
        return ProcessedImage({"pixel_values": pixels}, tuple(grid))  # type: ignore[arg-type]

    def check_grid(self, processed: ProcessedImage, grid: Grid, field: str) -> None:
        """The processor made as many tiles of the fixed size as the payload counts (so as many placeholders)."""
        if processed.grid != grid:
            shape = list(processed.tensors["pixel_values"].shape)
            expected = f"{list(grid)}: {grid[0]} tiles of {self.spec.tile_height} x {self.spec.tile_width} pixels"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", f"pixel_values of shape {shape}", expected)

    def _tiles_of(self, tile_grid: Any) -> int:
        """Tile images of a `[rows, columns]` arrangement: the tiles, plus a thumbnail when more than one; 0 (which
        no grid matches) for an arrangement outside `[min_tiles, max_tiles]` or a missing one."""
        if not (isinstance(tile_grid, list | tuple) and len(tile_grid) == 2):
            return 0
        rows, columns = (int(x) for x in tile_grid)
        count = rows * columns
        one_tile = self.spec.max_tiles <= 1
        if (one_tile and count != 1) or (not one_tile and not self.spec.min_tiles <= count <= self.spec.max_tiles):
            return 0
        return count + (1 if count > 1 else 0)

    def _grid_of(self, pixels: torch.Tensor) -> Grid:
        """`[tiles, s, s]` of processed pixels made of tiles of the fingerprinted size, else (0, 0, 0)."""
        side = self.spec.tokens_per_side
        tile = (len(self.image_processor.image_mean), self.spec.tile_height, self.spec.tile_width)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != tile or pixels.shape[0] < 1:
            return (0, 0, 0)
        return (int(pixels.shape[0]), side, side)


def internvl_adapter(processor: Any, config: MultimodalConfig) -> InternVLAdapter:
    return InternVLAdapter(processor, config)


def _image_token_id(processor: Any) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ContractError("processor.image_token_id", token_id, "the id of <IMG_CONTEXT>")
    return token_id
