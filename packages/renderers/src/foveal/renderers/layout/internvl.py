"""Layout adapter for InternVL 3.5 (HF format): dynamic tiling into fixed-size tiles, plus a thumbnail.

InternVLProcessor calls its image processor (GotOcr2ImageProcessor, either backend) with `crop_to_patches=True`
(the processor's own default, which wins over the `crop_to_patches: false` of preprocessor_config.json). The
image processor then, per image:
- lists every tile arrangement (columns c, rows r) with `min_patches <= c * r <= max_patches`, ordered by
  c * r (stable over columns-major enumeration);
- picks the one whose aspect ratio c / r is closest to width / height; on an exact tie a later (larger)
  arrangement replaces the best only while `width * height > 0.5 * tile_h * tile_w * c * r`;
- resizes the image to (r * tile_h, c * tile_w), cuts it into c * r tiles, and adds one thumbnail tile (the
  whole image resized to one tile) when there is more than one tile. With `max_patches <= 1` the image is one
  tile, resized, and no arrangement is searched.
Each tile becomes `image_seq_length` image tokens (processor_config.json; 256 in the released models: a
448 px tile is 32 x 32 patches of 14 px, pixel-shuffled by 0.5 to 16 x 16), so an image's run is
`<IMG_CONTEXT>` x (tiles * image_seq_length), framed by `<img>` ... `</img>` by the processor.

The payload's grid is honest about tiles: `image_grid_thw = [tiles, s, s]` with `s * s = image_seq_length`
(t counts the tile images the vision tower sees, thumbnail included: the rows of `pixel_values`), so
`num_placeholder_tokens = t * h * w`; `tile_grid = [rows, columns]` records the arrangement (a thumbnail is
present exactly when rows * columns > 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from foveal.renderers.errors import ContractError
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.spec import check_family, check_positive_int, settings_fingerprint

# Both backends of transformers' GOT-OCR2 image processor, the one InternVL checkpoints name.
INTERNVL_PROCESSORS = frozenset({"GotOcr2ImageProcessor", "GotOcr2ImageProcessorPil"})
DEFAULT_IMAGE_SEQ_LENGTH = 256
"""InternVLProcessor's `image_seq_length` when processor_config.json does not set it."""


@dataclass(frozen=True, slots=True)
class InternVLLayoutSpec:
    """The settings that decide an InternVL image's tiles and placeholder run; fingerprinted like `LayoutSpec`."""

    family: str
    tile_height: int
    tile_width: int
    min_tiles: int
    max_tiles: int
    tokens_per_tile: int
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_family(self.family)
        for name in ("tile_height", "tile_width", "min_tiles", "max_tiles", "tokens_per_tile"):
            check_positive_int(name, getattr(self, name))
        if math.isqrt(self.tokens_per_tile) ** 2 != self.tokens_per_tile:
            expected = "a square number: each tile's patches are pixel-shuffled to a square grid of tokens"
            raise ContractError("layout.tokens_per_tile", self.tokens_per_tile, expected)
        object.__setattr__(self, "fingerprint", settings_fingerprint(self.settings()))

    @property
    def tokens_per_side(self) -> int:
        return math.isqrt(self.tokens_per_tile)

    def settings(self) -> dict[str, Any]:
        """The fingerprinted settings (tiling and the thumbnail are always on, as InternVLProcessor runs them)."""
        return {
            "family": self.family,
            "tile_height": self.tile_height,
            "tile_width": self.tile_width,
            "min_tiles": self.min_tiles,
            "max_tiles": self.max_tiles,
            "tokens_per_tile": self.tokens_per_tile,
            "crop_to_patches": True,
            "thumbnail": True,
        }


@lru_cache(maxsize=64)
def tile_arrangements(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Every (columns, rows) with min_tiles <= columns * rows <= max_tiles, ordered by tile count (stable)."""
    grids = [
        (columns, rows)
        for columns in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= columns * rows <= max_tiles
    ]
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


def tile_grid(spec: InternVLLayoutSpec, width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of the canvas the image is resized to; (1, 1) when no tiling happens."""
    if spec.max_tiles <= 1:
        return 1, 1
    aspect_ratio = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for columns, rows in tile_arrangements(spec.min_tiles, spec.max_tiles):
        diff = abs(aspect_ratio - columns / rows)
        if diff < best_diff:
            best_diff, best = diff, (columns, rows)
        elif diff == best_diff and area > 0.5 * spec.tile_height * spec.tile_width * columns * rows:
            best = (columns, rows)
    return best


def internvl_layout(spec: InternVLLayoutSpec, width: int, height: int) -> ImageLayout:
    """Tiles (plus a thumbnail when more than one), each `tokens_per_tile` placeholders."""
    columns, rows = tile_grid(spec, width, height)
    tiles = columns * rows + (1 if columns * rows > 1 else 0)
    side = spec.tokens_per_side
    return ImageLayout(
        family=spec.family,
        fingerprint=spec.fingerprint,
        resized=(rows * spec.tile_height, columns * spec.tile_width),
        image_grid_thw=(tiles, side, side),
        num_placeholder_tokens=tiles * spec.tokens_per_tile,
        tile_grid=(rows, columns),
    )


def read_internvl_spec(
    image_processor: Any, family: str, processor_config: Mapping[str, Any] | None = None
) -> InternVLLayoutSpec:
    """Read a GOT-OCR2 image processor (either backend) plus InternVLProcessor's `image_seq_length`."""
    if image_processor.do_resize is not True:
        raise ContractError("image_processor.do_resize", image_processor.do_resize, "True: every tile is resized")
    size = image_processor.size
    height, width = (None, None) if size is None else (size.get("height"), size.get("width"))
    if height is None or width is None:
        raise ContractError("image_processor.size", size, "a fixed {'height': ..., 'width': ...} tile size")
    tokens = (processor_config or {}).get("image_seq_length", DEFAULT_IMAGE_SEQ_LENGTH)
    return InternVLLayoutSpec(
        family=family,
        tile_height=height,
        tile_width=width,
        min_tiles=image_processor.min_patches,
        max_tiles=image_processor.max_patches,
        tokens_per_tile=tokens,
    )


INTERNVL = LayoutFamily(
    name="internvl",
    processor_classes=INTERNVL_PROCESSORS,
    read_spec=read_internvl_spec,
    compute=internvl_layout,
    spec_type=InternVLLayoutSpec,
)
