"""The layout of one image: what the renderer records and every reader re-derives and checks."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from foveal.renderers.errors import ImageRejected


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """One image's resized size, patch grid and placeholder count under one `LayoutSpec`.

    `image_grid_thw` is (t, h, w) in patches, as the HF processor reports it for a single image;
    `num_placeholder_tokens` is how many image-pad tokens the prompt must carry for it.
    """

    family: str
    fingerprint: str
    resized: tuple[int, int]
    image_grid_thw: tuple[int, int, int]
    num_placeholder_tokens: int
    tile_grid: tuple[int, int] | None = None
    """(rows, columns) of the tiles a tiling family (`internvl`, `smolvlm`) cut the image into; None for the others."""
    placeholder_runs: int | None = None
    """How many separate runs the image's placeholders form (`smolvlm`: one per tile); None: one run."""

    @property
    def num_patches(self) -> int:
        """Rows of `pixel_values` the processor emits for this image (one per patch)."""
        t, h, w = self.image_grid_thw
        return t * h * w

    def payload(self) -> dict[str, Any]:
        """The family-owned, JSON-safe part of the raw descriptor (docs/contract.md section 1)."""
        payload: dict[str, Any] = {
            "image_grid_thw": list(self.image_grid_thw),
            "num_placeholder_tokens": self.num_placeholder_tokens,
        }
        if self.tile_grid is not None:
            payload["tile_grid"] = list(self.tile_grid)
        if self.placeholder_runs is not None:
            payload["placeholder_runs"] = self.placeholder_runs
        return payload


def image_side(name: str, value: object) -> int:
    """A positive Python int for an image side; numpy integers are accepted, bools and floats are not.

    Normalising here keeps the layout cache keyed on plain ints (a cached 100 must not answer 100.0).
    """
    try:
        side = 0 if isinstance(value, bool) else operator.index(value)
    except TypeError:
        side = 0
    if side < 1:
        raise ImageRejected(f"image.{name}", value, "a positive integer pixel count")
    return side
