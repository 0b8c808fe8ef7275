"""The shape every family's image adapter fills in on the trainer side.

An adapter owns what differs between model families: which processor it accepts, how the processor's
settings map to a layout fingerprint, how one image becomes pixel rows, and which keyword arguments the
model's forward takes. The materializer around it (store reads, caching, policies) is family-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from foveal.renderers.layout import LayoutSpec

Grid = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """One image as the model consumes it: pixel rows (one per patch) and its (t, h, w) patch grid.

    Shared through the pixel cache, so treat `pixel_values` as read-only.
    """

    pixel_values: torch.Tensor
    image_grid_thw: Grid

    @property
    def nbytes(self) -> int:
        return self.pixel_values.numel() * self.pixel_values.element_size()


class ImageAdapter(Protocol):
    """One family's adapter, bound to one loaded processor and the run's `[multimodal]` settings."""

    family: str
    spec: LayoutSpec
    """The layout settings the processor runs with (pixel-bound overrides applied); its fingerprint must
    equal every descriptor's."""
    image_token_id: int
    cache_key: str
    """Names everything that decides pixel values (layout fingerprint plus normalization settings)."""

    def check_payload(self, payload: Mapping[str, Any], field: str) -> Grid:
        """The payload's grid, after checking it agrees with its placeholder count under this family."""
        ...

    def process(self, image: Image.Image) -> ProcessedImage:
        """Run the real processor on one image."""
        ...

    def zeros(self, grid: Grid) -> ProcessedImage:
        """A zero image of `grid`, shaped exactly as `process` would shape that grid."""
        ...

    def model_kwargs(self, images: Sequence[ProcessedImage]) -> dict[str, torch.Tensor]:
        """The forward kwargs for a sample's images, in order; empty when there are none."""
        ...
