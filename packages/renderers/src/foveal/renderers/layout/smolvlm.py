"""Layout adapter for SmolVLM2 (Idefics3-style image splitting): tiles of one size plus a global view.

SmolVLMProcessor runs its image processor (SmolVLMImageProcessor, either backend) with `return_row_col_info`,
and per image the image processor:
- resizes the longest edge to `size["longest_edge"]` (up or down), the other side `int(side * ratio)` rounded up
  to an even number (at least 1), then scales both below 4096 px if needed (`MAX_IMAGE_SIZE`);
- with `do_image_splitting`, resizes again so both sides are multiples of the tile size
  `max_image_size["longest_edge"]`: the longer side rounded up first, the other computed from it with the
  aspect ratio (`int`), then rounded up too; if either side then exceeds one tile, it is cut into rows x
  columns tiles and the whole image, resized to one tile, is appended as the global view; otherwise the image
  is one tile (rows = columns = 0);
- without splitting, every image is one tile of the tile size (rows = columns = 0).
SmolVLMProcessor then replaces each `<image>` the template printed with the block `image_block` spells out:
per tile `<fake_token_around_image><row_R_col_C>` + `<image>` x image_seq_len, a `\\n` after each row of
tiles, then `\\n<fake_token_around_image><global-img>` + `<image>` x image_seq_len + `<fake_token_around_image>`
(an unsplit image is only the global part, without the newline). `image_seq_len` (processor_config.json; 64 in
SmolVLM2-256M/500M, 81 in SmolVLM2-2.2B) is (tile / patch)^2 / scale_factor^2, a square number.

The payload's grid counts tile images: `image_grid_thw = [tiles, s, s]` with `s * s = image_seq_len` and
tiles = rows * columns + 1 (or 1), the rows of `pixel_values` for the image; `num_placeholder_tokens = tiles * s
* s`; `tile_grid = [rows, columns]` ([0, 0] unsplit); `placeholder_runs = tiles`: unlike the other families the
image's placeholders are not one run but one run per tile, separated by the block's own tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from foveal.renderers.errors import ContractError, ImageRejected
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.spec import check_family, check_positive_int, settings_fingerprint

SMOLVLM_PROCESSORS = frozenset({"SmolVLMImageProcessor", "SmolVLMImageProcessorPil"})
DEFAULT_IMAGE_SEQ_LEN = 169
"""SmolVLMProcessor's `image_seq_len` when processor_config.json does not set it."""
MAX_IMAGE_SIZE = 4096
"""transformers' absolute cap on either side after the longest-edge resize."""
FAKE_TOKEN, GLOBAL_TOKEN, IMAGE_TOKEN = "<fake_token_around_image>", "<global-img>", "<image>"

BlockPart = tuple[Literal["token", "text", "run"], str]
"""One element of an image block: an added token, text (a newline), or a run of `image_seq_len` `<image>`."""


@dataclass(frozen=True, slots=True)
class SmolVLMLayoutSpec:
    """The settings that decide a SmolVLM image's tiles and block; fingerprinted like `LayoutSpec`."""

    family: str
    longest_edge: int
    """`size["longest_edge"]`: the first resize's target for the longer side."""
    tile_size: int
    """`max_image_size["longest_edge"]`: the side of every tile and of the global view."""
    splitting: bool
    """`do_image_splitting`."""
    tokens_per_tile: int
    """SmolVLMProcessor's `image_seq_len`."""
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_family(self.family)
        for name in ("longest_edge", "tile_size", "tokens_per_tile"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.splitting, bool):
            raise ContractError("layout.splitting", self.splitting, "a bool (do_image_splitting)")
        if math.isqrt(self.tokens_per_tile) ** 2 != self.tokens_per_tile:
            expected = "a square number: each tile's patches are pixel-shuffled to a square grid of tokens"
            raise ContractError("layout.tokens_per_tile", self.tokens_per_tile, expected)
        object.__setattr__(self, "fingerprint", settings_fingerprint(self.settings()))

    @property
    def tokens_per_side(self) -> int:
        return math.isqrt(self.tokens_per_tile)

    def settings(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "longest_edge": self.longest_edge,
            "tile_size": self.tile_size,
            "splitting": self.splitting,
            "tokens_per_tile": self.tokens_per_tile,
        }


def resized_size(longest_edge: int, width: int, height: int) -> tuple[int, int]:
    """(height, width) after the longest-edge resize and the 4096 cap, with transformers' float steps."""
    aspect_ratio = width / height
    if width >= height:
        width = longest_edge
        height = int(width / aspect_ratio)
        height += height % 2
    else:
        height = longest_edge
        width = int(height * aspect_ratio)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect_ratio = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width = MAX_IMAGE_SIZE
        height = int(width / aspect_ratio)
    elif height > width and height > MAX_IMAGE_SIZE:
        height = MAX_IMAGE_SIZE
        width = int(height * aspect_ratio)
    return max(height, 1), max(width, 1)


def tile_canvas(tile: int, height: int, width: int) -> tuple[int, int]:
    """(height, width) the resized image is brought to before cutting: multiples of the tile size."""
    aspect_ratio = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect_ratio) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect_ratio) / tile) * tile
    return height, width


def tile_grid(spec: SmolVLMLayoutSpec, width: int, height: int) -> tuple[int, int]:
    """(rows, columns) of tiles the processor reports; (0, 0) when the image stays one tile."""
    if not spec.splitting:
        return 0, 0
    height, width = resized_size(spec.longest_edge, width, height)
    height, width = tile_canvas(spec.tile_size, height, width)
    if height < 1 or width < 1:
        expected = "an aspect ratio the tile resize keeps both sides of (the processor cannot resize to 0 px)"
        raise ImageRejected("image.aspect_ratio", f"{width}x{height}", expected)
    if height > spec.tile_size or width > spec.tile_size:
        return height // spec.tile_size, width // spec.tile_size
    return 0, 0


def image_block(rows: int, columns: int) -> tuple[BlockPart, ...]:
    """The exact pattern SmolVLMProcessor writes for one image, each ("run", "<image>") being image_seq_len tokens."""
    glob: tuple[BlockPart, ...] = (("token", FAKE_TOKEN), ("token", GLOBAL_TOKEN), ("run", IMAGE_TOKEN))
    if rows == 0 and columns == 0:
        return (*glob, ("token", FAKE_TOKEN))
    parts: list[BlockPart] = []
    for row in range(1, rows + 1):
        for column in range(1, columns + 1):
            parts += [("token", FAKE_TOKEN), ("token", f"<row_{row}_col_{column}>"), ("run", IMAGE_TOKEN)]
        parts.append(("text", "\n"))
    return (*parts, ("text", "\n"), *glob, ("token", FAKE_TOKEN))


def smolvlm_layout(spec: SmolVLMLayoutSpec, width: int, height: int) -> ImageLayout:
    """Tiles plus the global view (or one tile), each `tokens_per_tile` placeholders in its own run."""
    rows, columns = tile_grid(spec, width, height)
    tiles = rows * columns + 1 if rows * columns else 1
    side = spec.tokens_per_side
    canvas = (rows * spec.tile_size, columns * spec.tile_size) if tiles > 1 else (spec.tile_size, spec.tile_size)
    return ImageLayout(
        family=spec.family,
        fingerprint=spec.fingerprint,
        resized=canvas,
        image_grid_thw=(tiles, side, side),
        num_placeholder_tokens=tiles * spec.tokens_per_tile,
        tile_grid=(rows, columns),
        placeholder_runs=tiles,
    )


def read_smolvlm_spec(
    image_processor: Any, family: str, processor_config: Mapping[str, Any] | None = None
) -> SmolVLMLayoutSpec:
    """Read a SmolVLM image processor (either backend) plus SmolVLMProcessor's `image_seq_len`."""
    if image_processor.do_resize is not True:
        raise ContractError("image_processor.do_resize", image_processor.do_resize, "True: the longest edge is resized")
    size, tile = image_processor.size, image_processor.max_image_size
    longest = None if size is None else size.get("longest_edge")
    if longest is None:
        raise ContractError("image_processor.size", size, "{'longest_edge': ...}")
    tile_side = None if tile is None else tile.get("longest_edge")
    if tile_side is None:
        raise ContractError("image_processor.max_image_size", tile, "{'longest_edge': ...}")
    tokens = (processor_config or {}).get("image_seq_len", DEFAULT_IMAGE_SEQ_LEN)
    return SmolVLMLayoutSpec(
        family=family,
        longest_edge=longest,
        tile_size=tile_side,
        splitting=bool(image_processor.do_image_splitting),
        tokens_per_tile=tokens,
    )


SMOLVLM = LayoutFamily(
    name="smolvlm",
    processor_classes=SMOLVLM_PROCESSORS,
    read_spec=read_smolvlm_spec,
    compute=smolvlm_layout,
    spec_type=SmolVLMLayoutSpec,
)
