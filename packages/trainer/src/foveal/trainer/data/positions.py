"""Position ids for packed rows: computed per sample, so every sample starts again at position 0.

Text models take one row per token (`[T]` per sample, `[1, T]` packed). A vision family numbers its tokens
with the scheme it registers by model type (`foveal.trainer.data.adapters.POSITION_SCHEMES`), e.g. the
Qwen-VL families' `[4, L]` mrope rows (`foveal.trainer.data.adapters.mrope`), Gemma 3's 1-D row after its image
check (`foveal.trainer.data.adapters.fixed_tokens`) or InternVL's after its tile check
(`foveal.trainer.data.adapters.tiles`); `pack_positions` joins either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from foveal.renderers.errors import PlaceholderMismatch, UnknownFamily
from foveal.trainer.data.adapters.base import PixelKwargs, PositionScheme
from foveal.trainer.data.adapters.registry import POSITION_SCHEMES


@dataclass(frozen=True)
class TextPositions:
    """1-D positions 0..L-1 for text-only models."""

    rope_rows: ClassVar[int] = 1

    def sample_positions(self, sample_id: str, input_ids: torch.Tensor, pixel_kwargs: PixelKwargs) -> torch.Tensor:
        if pixel_kwargs:
            raise PlaceholderMismatch(f"sample {sample_id!r}.pixel_kwargs", sorted(pixel_kwargs), "no images")
        return torch.arange(len(input_ids), dtype=torch.long)


def position_scheme(model: torch.nn.Module) -> PositionScheme:
    """The scheme `model` expects: its family's when registered, 1-D for models without vision."""
    config = model.config
    family_scheme = POSITION_SCHEMES.get(config.model_type)
    if family_scheme is not None:
        return family_scheme(model)
    if getattr(config, "vision_config", None) is not None:
        raise UnknownFamily("model_type", config.model_type, f"a text model or one of {sorted(POSITION_SCHEMES)}")
    return TextPositions()


def pack_positions(per_sample: Sequence[torch.Tensor]) -> torch.Tensor:
    """Join per-sample positions along the tokens: `[L_i]` -> `[1, T]`, `[rows, L_i]` -> `[rows, 1, T]`."""
    return torch.cat(list(per_sample), dim=-1).unsqueeze(-2)
