"""`smolvlm`: SmolVLM2, whose processor splits every image into fixed-size tiles plus a global view.

SmolVLMProcessor runs its image processor (SmolVLMImageProcessor) with image splitting: one image becomes
`pixel_values` `[1, tiles, 3, H, W]` (its tiles row by row, then the global view; one tile when the image fits one)
and `pixel_attention_mask` `[1, tiles, H, W]`. The model takes 5-D `pixel_values` `[batch, images, 3, H, W]`,
flattens the first two dimensions, drops all-zero (padding) tiles, and scatters `image_seq_len` features per tile,
in order, over the `<image>` tokens; which batch row a tile sits in does not matter to it. So one image is kept
here as `[tiles, 1, 3, H, W]` and `[tiles, 1, H, W]`: images and samples then join on the first dimension like
every other family's. The descriptor's grid counts tiles (`[tiles, s, s]`, `s * s = image_seq_len`), `tile_grid`
records rows and columns and `placeholder_runs` the runs (`foveal.renderers.layout.smolvlm`); a processed image has
that grid when the processor made that many tiles of the fingerprinted size in the arrangement the layout computes.

The placeholder is `<image>` (SmolVLMProcessor's `image_token_id`, the model config's `image_token_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ContractError, PlaceholderMismatch, UnknownFamily
from foveal.renderers.layout import SmolVLMLayoutSpec, compute_layout, spec_from_image_processor, with_pixel_bounds
from foveal.trainer.data.adapters.base import Grid, ProcessedImage

FAMILY = "smolvlm"
PROCESSOR_CLASSES = frozenset({"SmolVLMProcessor"})


class SmolVLMAdapter:
    """SmolVLM image adapter bound to one loaded processor (`AutoProcessor.from_pretrained(model_dir)`)."""

    def __init__(self, processor: Any, config: MultimodalConfig) -> None:
        names = {cls.__name__ for cls in type(processor).__mro__}
        if names.isdisjoint(PROCESSOR_CLASSES):
            expected = f"a {FAMILY} processor, one of {sorted(PROCESSOR_CLASSES)}"
            raise UnknownFamily("processor", type(processor).__name__, expected)
        self.family = FAMILY
        self.image_processor = processor.image_processor
        base = spec_from_image_processor(self.image_processor, FAMILY, {"image_seq_len": processor.image_seq_len})
        # Refuses [multimodal] pixel bounds: every tile has one fixed size.
        spec = with_pixel_bounds(base, config.min_pixels, config.max_pixels)
        if not isinstance(spec, SmolVLMLayoutSpec):
            raise ContractError("layout", type(spec).__name__, "a SmolVLMLayoutSpec (SmolVLM's splitting settings)")
        self.spec = spec
        self.image_token_id = _image_token_id(processor)
        digest = xxhash.xxh3_64_hexdigest(self.image_processor.to_json_string().encode())
        self.cache_key = f"{self.spec.fingerprint}:{digest}"

    def check_payload(self, payload: Mapping[str, Any], field: str) -> Grid:
        """The recorded grid, if it is `[tiles, s, s]` for its `tile_grid` (rows * columns + the global view, or one
        tile for `[0, 0]`), with `tiles * image_seq_len` placeholders in `tiles` runs."""
        grid = tuple(int(x) for x in payload["image_grid_thw"])
        side = self.spec.tokens_per_side
        tiles = self._tiles_of(payload.get("tile_grid"))
        count = tiles * self.spec.tokens_per_tile
        if grid != (tiles, side, side) or payload["num_placeholder_tokens"] != count:
            expected = (
                f"[{tiles}, {side}, {side}] with {count} placeholder tokens (the tiles of tile_grid "
                f"{payload.get('tile_grid')}, plus the global view when split)"
            )
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)
        if payload.get("placeholder_runs") != tiles:
            expected = f"{tiles}: one run of {self.spec.tokens_per_tile} placeholders per tile"
            raise PlaceholderMismatch(f"{field}.payload.placeholder_runs", payload.get("placeholder_runs"), expected)
        return grid  # type: ignore[return-value]

    def process(self, image: Image.Image) -> ProcessedImage:
        """The real image processor as SmolVLMProcessor runs it: `[tiles, 1, 3, H, W]` and `[tiles, 1, H, W]`."""
        out = self.image_processor(images=[[image]], return_tensors="pt", return_row_col_info=True)
        pixels = out["pixel_values"].transpose(0, 1)
        mask = out["pixel_attention_mask"].transpose(0, 1)
        arrangement = (int(out["rows"][0][0]), int(out["cols"][0][0]))
        expected = compute_layout(self.spec, image.width, image.height).tile_grid
        grid = self._grid_of(pixels) if arrangement == expected else (0, 0, 0)
        return ProcessedImage({"pixel_values": pixels, "pixel_attention_mask": mask}, grid)

    def zeros(self, grid: Grid) -> ProcessedImage:
        """A black image of `grid` as the processor normalizes it: the model drops all-zero tiles as batch padding,
        which would leave their placeholders without features."""
        mean = torch.tensor(self.image_processor.image_mean, dtype=torch.float32)
        std = torch.tensor(self.image_processor.image_std, dtype=torch.float32)
        tile = self.spec.tile_size
        black = (-mean / std).view(1, 1, -1, 1, 1)
        pixels = black.expand(grid[0], 1, len(mean), tile, tile).contiguous()
        mask = torch.ones(grid[0], 1, tile, tile, dtype=torch.long)
        return ProcessedImage({"pixel_values": pixels, "pixel_attention_mask": mask}, tuple(grid))  # type: ignore[arg-type]

    def check_grid(self, processed: ProcessedImage, grid: Grid, field: str) -> None:
        """The processor made as many tiles of the fixed size as the payload counts, in the layout's arrangement."""
        if processed.grid != grid:
            shape = list(processed.tensors["pixel_values"].shape)
            tile = self.spec.tile_size
            expected = f"{list(grid)}: {grid[0]} tiles of {tile} x {tile} pixels in the layout's rows and columns"
            raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", f"pixel_values of shape {shape}", expected)

    def _tiles_of(self, tile_grid: Any) -> int:
        """Tile images of `[rows, columns]`: one for `[0, 0]`, else the tiles plus the global view; 0 (which no grid
        matches) for a missing arrangement or one no image can have under these settings."""
        if not (isinstance(tile_grid, list | tuple) and len(tile_grid) == 2):
            return 0
        rows, columns = (int(x) for x in tile_grid)
        if (rows, columns) == (0, 0):
            return 1
        most = -(-self.spec.longest_edge // self.spec.tile_size)
        if not self.spec.splitting or not (1 <= rows <= most and 1 <= columns <= most) or rows * columns < 2:
            return 0
        return rows * columns + 1

    def _grid_of(self, pixels: torch.Tensor) -> Grid:
        """`[tiles, s, s]` of processed pixels made of tiles of the fingerprinted size, else (0, 0, 0)."""
        side = self.spec.tokens_per_side
        tile = (1, len(self.image_processor.image_mean), self.spec.tile_size, self.spec.tile_size)
        if pixels.ndim != 5 or tuple(pixels.shape[1:]) != tile or pixels.shape[0] < 1:
            return (0, 0, 0)
        return (int(pixels.shape[0]), side, side)


def smolvlm_adapter(processor: Any, config: MultimodalConfig) -> SmolVLMAdapter:
    return SmolVLMAdapter(processor, config)


def _image_token_id(processor: Any) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ContractError("processor.image_token_id", token_id, "the id of <image>")
    return token_id
