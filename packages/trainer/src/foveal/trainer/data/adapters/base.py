"""The shapes every model family fills in on the trainer side: its image adapter and its position scheme.

An adapter owns what differs between families on the processor side: which processor it accepts, how the
processor's settings map to a layout fingerprint, how one image becomes the tensors the model's forward
takes (named as its keyword arguments) and which grid they have. A position scheme owns the model side:
how the tokens of one sample, with its images' tensors, are numbered. The code around them (store reads,
caching, policies, packing, the forward call) is family-free: it only joins image tensors name by name
(`concat_pixel_kwargs`) and hands them to the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from PIL import Image

from foveal.renderers.errors import ContractError
from foveal.renderers.layout import AnyLayoutSpec

Grid = tuple[int, int, int]
PixelKwargs = Mapping[str, torch.Tensor]
"""A model's image keyword arguments, by name. Each tensor's first dimension runs over images (or their
patch rows), so the inputs of several images or samples join name by name with `torch.cat`, in order."""


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """One image as the model consumes it: its forward kwargs alone, and its patch grid.

    Shared through the pixel cache, so treat the tensors as read-only.
    """

    tensors: PixelKwargs
    grid: Grid

    @property
    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.tensors.values())


def concat_pixel_kwargs(parts: Sequence[PixelKwargs]) -> dict[str, torch.Tensor]:
    """Several images' or samples' kwargs as one, name by name in order; every part with images names the same."""
    present = [part for part in parts if part]
    names = {tuple(sorted(part)) for part in present}
    if len(names) > 1:
        raise ContractError("pixel_kwargs", sorted(names), "the same image kwargs for every image")
    return {name: torch.cat([part[name] for part in present]) for name in (present[0] if present else ())}


class ImageAdapter(Protocol):
    """One family's adapter, bound to one loaded processor and the run's `[multimodal]` settings."""

    family: str
    spec: AnyLayoutSpec
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

    def check_grid(self, processed: ProcessedImage, grid: Grid, field: str) -> None:
        """Raise PlaceholderMismatch unless the processor gave the payload's grid (the tokens are laid out for it)."""
        ...


class PositionScheme(Protocol):
    """Numbers the tokens of one sample; `foveal.trainer.data.positions.pack_positions` joins samples into a row."""

    rope_rows: ClassVar[int]
    """How many rows of rope positions the model takes: the last rows of `sample_positions`'s result."""

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        """`[L]` or `[rows, L]` positions of one sample, after checking its images agree with its tokens."""
        ...
