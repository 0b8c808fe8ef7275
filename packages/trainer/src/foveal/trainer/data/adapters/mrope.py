"""The Qwen-VL families' position scheme: a text row plus the model's own 3-D mrope rows.

mrope numbers tokens on three rows (temporal, height, width) that the model's own `get_rope_index` derives
from the placeholder layout and `image_grid_thw`. We call that function on each sample alone (never on the
packed row, where it would number the second sample's tokens after the first's) and prepend a plain text row,
giving `[4, L]` per sample and `[4, 1, T]` packed. In transformers 5.19 the Qwen-VL text models read row 0 of
a 4-row `position_ids` as the token positions from which they find sample boundaries (see
`foveal.trainer.model.attention`), and rows 1-3 as the rope positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.placeholders import RunFields, pair_images
from foveal.trainer.data.adapters.base import PixelKwargs

RopeIndex = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MropePositions:
    """The text row plus the model's own 3-D mrope rows, `[4, L]` for one sample."""

    rope_index: RopeIndex
    image_token_id: int
    video_token_id: int
    spatial_merge_size: int
    rope_rows: ClassVar[int] = 3

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        grid = _image_grid(sample_id, pixel_kwargs)
        self._check_placeholders(sample_id, input_ids, grid)
        token_types = (input_ids == self.image_token_id).long()
        rope, _ = self.rope_index(
            input_ids.view(1, -1), mm_token_type_ids=token_types.view(1, -1), image_grid_thw=grid if len(grid) else None
        )
        text = torch.arange(len(input_ids), dtype=torch.long)
        return torch.cat([text.view(1, -1), rope.view(3, -1).to(torch.long)])

    def _check_placeholders(self, sample_id: str, input_ids: torch.Tensor, grid: torch.Tensor) -> None:
        """The rope index silently misnumbers a sample whose placeholders disagree with its grids: refuse it."""
        if bool((input_ids == self.video_token_id).any()):
            raise PlaceholderMismatch(f"sample {sample_id!r}.input_ids", "video placeholder", "images only")
        tokens = f"sample {sample_id!r}.input_ids"
        fields = RunFields(image=lambda _: f"sample {sample_id!r}.image_grid_thw", run=lambda _: tokens, tokens=tokens)
        counts = (grid.prod(-1) // self.spatial_merge_size**2).tolist()
        pair_images(input_ids.tolist(), self.image_token_id, counts, fields)


def mrope_positions(model: torch.nn.Module) -> MropePositions:
    """The scheme of a loaded Qwen-VL model, numbering with its own rope index."""
    config = model.config
    return MropePositions(
        rope_index=model.model.get_rope_index,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=config.vision_config.spatial_merge_size,
    )


def _image_grid(sample_id: str, pixel_kwargs: PixelKwargs) -> torch.Tensor:
    """The sample's `[images, 3]` grids, once they account for every pixel row (none without images)."""
    pixels, grid = pixel_kwargs.get("pixel_values"), pixel_kwargs.get("image_grid_thw")
    if (pixels is None) != (grid is None):
        raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_values", pixels is None, "with image_grid_thw")
    if grid is None or pixels is None:
        return torch.zeros(0, 3, dtype=torch.long)
    if grid.ndim != 2 or grid.shape[-1] != 3:
        raise PlaceholderMismatch(f"sample {sample_id!r}.image_grid_thw", list(grid.shape), "shape [images, 3]")
    patches = int(grid.prod(-1).sum())
    if pixels.shape[0] != patches:
        field = f"sample {sample_id!r}.pixel_values"
        raise PlaceholderMismatch(field, pixels.shape[0], f"{patches} patch rows for grids {grid.tolist()}")
    return grid.to(torch.long)
