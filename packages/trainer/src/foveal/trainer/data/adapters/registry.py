"""Family name -> image adapter factory, and HF model type -> position scheme.

Adding a family is its adapter module and one line in each table.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import UnknownFamily
from foveal.trainer.data.adapters.base import ImageAdapter, PositionScheme
from foveal.trainer.data.adapters.fixed_tokens import gemma3_positions, smolvlm_positions
from foveal.trainer.data.adapters.gemma3 import gemma3_adapter
from foveal.trainer.data.adapters.glm4v import glm4v_adapter
from foveal.trainer.data.adapters.internvl import internvl_adapter
from foveal.trainer.data.adapters.mrope import mrope_positions
from foveal.trainer.data.adapters.qwen2_vl import qwen2_vl_adapter
from foveal.trainer.data.adapters.qwen3_vl import qwen3_vl_adapter
from foveal.trainer.data.adapters.smolvlm import smolvlm_adapter
from foveal.trainer.data.adapters.tiles import internvl_positions

AdapterFactory = Callable[[Any, MultimodalConfig], ImageAdapter]
SchemeFactory = Callable[[torch.nn.Module], PositionScheme]

ADAPTERS: MappingProxyType[str, AdapterFactory] = MappingProxyType(
    {
        "qwen2_vl": qwen2_vl_adapter,
        "qwen3_vl": qwen3_vl_adapter,
        "gemma3": gemma3_adapter,
        "glm4v": glm4v_adapter,
        "internvl": internvl_adapter,
        "smolvlm": smolvlm_adapter,
    }
)
POSITION_SCHEMES: MappingProxyType[str, SchemeFactory] = MappingProxyType(
    {
        "qwen2_vl": mrope_positions,
        "qwen2_5_vl": mrope_positions,
        "qwen3_vl": mrope_positions,
        "gemma3": gemma3_positions,
        "glm4v": mrope_positions,
        "internvl": internvl_positions,
        "smolvlm": smolvlm_positions,
    }
)
"""`config.model_type` -> the scheme of a loaded vision model: its rope rows (Qwen-VL's mrope) and the check of its
images against its placeholders (Gemma 3: 1-D positions, a fixed run per image). GLM-4.1V's `get_rope_index` takes
the Qwen-VL arguments and its text model the same 4-row `position_ids`, so it shares the mrope scheme. InternVL: 1-D
positions, each placeholder run a whole number of tiles. SmolVLM: 1-D positions, one run of image_seq_len
placeholders per tile (the tiles' own tokens between them)."""


def image_adapter(family: str, processor: Any, config: MultimodalConfig) -> ImageAdapter:
    """The adapter of layout `family` bound to a loaded full processor; UnknownFamily for others."""
    factory = ADAPTERS.get(family) if isinstance(family, str) else None
    if factory is None:
        raise UnknownFamily("family", family, f"one of {sorted(ADAPTERS)}")
    return factory(processor, config)
