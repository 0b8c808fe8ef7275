"""1-D positions for a vision family whose every image is the same number of placeholder tokens (Gemma 3).

Gemma 3 numbers image tokens like text (one rope row, 0..L-1 per sample); what is left to check is that the
sample's placeholders are one run of `tokens_per_image` per image, in order, as many runs as images, before
the model scatters the images' features over them (the model itself only compares the total count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.placeholders import RunFields, pair_images
from foveal.trainer.data.adapters.base import PixelKwargs


@dataclass(frozen=True)
class FixedTokenPositions:
    """Positions 0..L-1, after checking one run of `tokens_per_image` placeholders per image in `pixel_values`."""

    image_token_id: int
    tokens_per_image: int
    rope_rows: ClassVar[int] = 1

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        extra = sorted(set(pixel_kwargs) - {"pixel_values"})
        if extra:
            raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_kwargs", extra, "pixel_values only")
        pixels = pixel_kwargs.get("pixel_values")
        images = 0 if pixels is None else int(pixels.shape[0])
        tokens = f"sample {sample_id!r}.input_ids"
        fields = RunFields(image=lambda _: f"sample {sample_id!r}.pixel_values", run=lambda _: tokens, tokens=tokens)
        pair_images(input_ids.tolist(), self.image_token_id, [self.tokens_per_image] * images, fields)
        return torch.arange(len(input_ids), dtype=torch.long)


def gemma3_positions(model: torch.nn.Module) -> FixedTokenPositions:
    """The scheme of a loaded Gemma 3 model: its image token, `mm_tokens_per_image` placeholders per image."""
    config = model.config
    return FixedTokenPositions(image_token_id=config.image_token_id, tokens_per_image=config.mm_tokens_per_image)
