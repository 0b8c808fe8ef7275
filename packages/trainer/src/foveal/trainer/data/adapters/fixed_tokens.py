"""1-D positions for a vision family whose every image (or tile) is the same number of placeholder tokens (Gemma 3,
SmolVLM's tiles).

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
    """Placeholders per row of `pixel_values`: one image (Gemma 3) or one tile (SmolVLM, each tile its own run)."""
    image_kwargs: frozenset[str] = frozenset({"pixel_values"})
    """The image keyword arguments the model takes (SmolVLM adds `pixel_attention_mask`)."""
    rope_rows: ClassVar[int] = 1

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        extra = sorted(set(pixel_kwargs) - self.image_kwargs)
        if extra:
            expected = " and ".join(sorted(self.image_kwargs)) + " only"
            raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_kwargs", extra, expected)
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


def smolvlm_positions(model: torch.nn.Module) -> FixedTokenPositions:
    """The scheme of a loaded SmolVLM model: its `<image>` id, `image_seq_len` placeholders per tile (a tile's
    (image_size / patch_size)^2 patches pixel-shuffled by `scale_factor`), one run per tile in `pixel_values`."""
    config = model.config
    patches = config.vision_config.image_size // config.vision_config.patch_size
    tokens = patches * patches // (config.scale_factor * config.scale_factor)
    kwargs = frozenset({"pixel_values", "pixel_attention_mask"})
    return FixedTokenPositions(image_token_id=config.image_token_id, tokens_per_image=tokens, image_kwargs=kwargs)
