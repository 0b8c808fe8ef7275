"""1-D positions for a vision family whose images are a varying number of fixed-size tiles (InternVL).

InternVL numbers image tokens like text (one rope row, 0..L-1 per sample). Its `pixel_values` hold every image's
tiles one after the other (`[tiles, 3, H, W]`), and the model scatters `image_seq_length` features per tile, in
order, over the sample's `<IMG_CONTEXT>` tokens, comparing only the totals. What is left to check here is that each
placeholder run (one per image: the processor frames each with `<img>` ... `</img>`) is a whole number of tiles and
that the runs together account for every tile row. Which image owns how many tiles is not in the tensors; the
materializer has already matched each span to its descriptor's tile count and each processed image to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.placeholders import placeholder_runs
from foveal.trainer.data.adapters.base import PixelKwargs


@dataclass(frozen=True)
class TiledTokenPositions:
    """Positions 0..L-1, after checking each placeholder run is whole tiles and the runs cover `pixel_values`."""

    image_token_id: int
    tokens_per_tile: int
    rope_rows: ClassVar[int] = 1

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        extra = sorted(set(pixel_kwargs) - {"pixel_values"})
        if extra:
            raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_kwargs", extra, "pixel_values only")
        pixels = pixel_kwargs.get("pixel_values")
        tiles = 0 if pixels is None else int(pixels.shape[0])
        tokens = f"sample {sample_id!r}.input_ids"
        runs = placeholder_runs(input_ids.tolist(), self.image_token_id)
        for start, length in runs:
            if length % self.tokens_per_tile:
                expected = f"a whole number of tiles of {self.tokens_per_tile} placeholder tokens"
                raise PlaceholderMismatch(tokens, f"a run of {length} from token {start}", expected)
        counted = sum(length for _, length in runs) // self.tokens_per_tile
        if counted != tiles:
            expected = f"{counted} tiles, one per {self.tokens_per_tile} placeholder tokens in {len(runs)} runs"
            raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_values", f"{tiles} tiles", expected)
        return torch.arange(len(input_ids), dtype=torch.long)


def internvl_positions(model: torch.nn.Module) -> TiledTokenPositions:
    """The scheme of a loaded InternVL model: its `<IMG_CONTEXT>` id, `image_seq_length` placeholders per tile."""
    config = model.config
    return TiledTokenPositions(image_token_id=config.image_token_id, tokens_per_tile=config.image_seq_length)
