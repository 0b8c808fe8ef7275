"""Position ids for packed rows: computed per sample, so every sample starts again at position 0.

Text models take one row per token (`[T]` per sample, `[1, T]` packed). The Qwen-VL families use mrope:
three rows (temporal, height, width) that the model's own `get_rope_index` derives from the placeholder
layout and `image_grid_thw`. We call that function on each sample alone (never on the packed row, where it
would number the second sample's tokens after the first's) and prepend a plain text row, giving `[4, L]`
per sample and `[4, 1, T]` packed. In transformers 5.19 the Qwen-VL text models read row 0 of a 4-row
`position_ids` as the token positions from which they find sample boundaries (see
`foveal.trainer.model.attention`), and rows 1-3 as the rope positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from foveal.renderers.errors import PlaceholderMismatch, UnknownFamily

# Model types whose forward takes [4, batch, T] position ids (text row + mrope rows) in transformers 5.19.
MROPE_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl"})
RopeIndex = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class PositionScheme(Protocol):
    """Numbers the tokens of one sample; `pack_positions` joins the results into one row."""

    def sample_positions(
        self, sample_id: str, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class TextPositions:
    """1-D positions 0..L-1 for text-only models."""

    def sample_positions(
        self, sample_id: str, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None
    ) -> torch.Tensor:
        if image_grid_thw is not None and len(image_grid_thw) > 0:
            raise PlaceholderMismatch(f"sample {sample_id!r}.image_grid_thw", image_grid_thw.tolist(), "no images")
        return torch.arange(len(input_ids), dtype=torch.long)


@dataclass(frozen=True)
class MropePositions:
    """The text row plus the model's own 3-D mrope rows, `[4, L]` for one sample."""

    rope_index: RopeIndex
    image_token_id: int
    video_token_id: int
    spatial_merge_size: int

    def sample_positions(
        self, sample_id: str, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None
    ) -> torch.Tensor:
        grid = _image_grid(image_grid_thw)
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
        is_image = input_ids == self.image_token_id
        runs = int((is_image[1:] & ~is_image[:-1]).sum()) + int(is_image[:1].sum())
        if runs != len(grid):
            raise PlaceholderMismatch(f"sample {sample_id!r}.image_grid_thw", len(grid), f"{runs} images (runs)")
        expected = int(grid.prod(-1).sum()) // self.spatial_merge_size**2
        if int(is_image.sum()) != expected:
            raise PlaceholderMismatch(
                f"sample {sample_id!r}.input_ids", int(is_image.sum()), f"{expected} image placeholders"
            )


def position_scheme(model: torch.nn.Module) -> TextPositions | MropePositions:
    """The scheme `model` expects: mrope for the Qwen-VL families, 1-D for models without vision."""
    config = model.config
    if config.model_type in MROPE_MODEL_TYPES:
        return MropePositions(
            rope_index=model.model.get_rope_index,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
            spatial_merge_size=config.vision_config.spatial_merge_size,
        )
    if getattr(config, "vision_config", None) is not None:
        raise UnknownFamily("model_type", config.model_type, f"a text model or one of {sorted(MROPE_MODEL_TYPES)}")
    return TextPositions()


def pack_positions(per_sample: Sequence[torch.Tensor]) -> torch.Tensor:
    """Join per-sample positions along the tokens: `[L_i]` -> `[1, T]`, `[4, L_i]` -> `[4, 1, T]`."""
    return torch.cat(list(per_sample), dim=-1).unsqueeze(-2)


def _image_grid(image_grid_thw: torch.Tensor | None) -> torch.Tensor:
    if image_grid_thw is None:
        return torch.zeros(0, 3, dtype=torch.long)
    return image_grid_thw.view(-1, 3).to(torch.long)
