"""Family name -> image adapter factory; adding a family is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import UnknownFamily
from foveal.trainer.data.adapters.base import ImageAdapter
from foveal.trainer.data.adapters.qwen2_vl import qwen2_vl_adapter
from foveal.trainer.data.adapters.qwen3_vl import qwen3_vl_adapter

AdapterFactory = Callable[[Any, MultimodalConfig], ImageAdapter]

ADAPTERS: MappingProxyType[str, AdapterFactory] = MappingProxyType(
    {"qwen2_vl": qwen2_vl_adapter, "qwen3_vl": qwen3_vl_adapter}
)


def image_adapter(family: str, processor: Any, config: MultimodalConfig) -> ImageAdapter:
    """The adapter of layout `family` bound to a loaded full processor; UnknownFamily for others."""
    factory = ADAPTERS.get(family) if isinstance(family, str) else None
    if factory is None:
        raise UnknownFamily("family", family, f"one of {sorted(ADAPTERS)}")
    return factory(processor, config)
