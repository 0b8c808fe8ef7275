"""Family name -> layout adapter, and the two entry points the renderer and readers call."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from foveal.renderers.errors import ContractError, UnknownFamily
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.gemma3 import GEMMA3
from foveal.renderers.layout.glm4v import GLM4V
from foveal.renderers.layout.image_layout import ImageLayout, image_side
from foveal.renderers.layout.internvl import INTERNVL
from foveal.renderers.layout.qwen_vl import QWEN2_VL, QWEN3_VL
from foveal.renderers.layout.smolvlm import SMOLVLM
from foveal.renderers.layout.spec import AnyLayoutSpec

_FAMILIES = MappingProxyType(
    {family.name: family for family in (QWEN2_VL, QWEN3_VL, GEMMA3, GLM4V, INTERNVL, SMOLVLM)}
)


def family_names() -> tuple[str, ...]:
    """The layout families Foveal has adapters for, sorted."""
    return tuple(sorted(_FAMILIES))


def layout_family(name: str) -> LayoutFamily:
    """The adapter for `name`; UnknownFamily for anything unregistered."""
    family = _FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise UnknownFamily("family", name, f"one of {list(family_names())}")
    return family


def spec_from_image_processor(
    image_processor: Any, family: str, processor_config: Mapping[str, Any] | None = None
) -> AnyLayoutSpec:
    """Read a real HF image processor's layout settings for `family`.

    The processor class is checked by name along its MRO (no transformers import, so no torch): a
    CLIP-style processor also has a `size`, and reading it as pixel bounds would be silently wrong.
    `processor_config` is the model's processor_config.json, for settings the full processor holds
    (Gemma 3's `image_seq_length`); the Qwen-VL families ignore it.
    """
    adapter = layout_family(family)
    class_names = {cls.__name__ for cls in type(image_processor).__mro__}
    if class_names.isdisjoint(adapter.processor_classes):
        raise ContractError(
            "image_processor", type(image_processor).__name__, f"one of {sorted(adapter.processor_classes)}"
        )
    return adapter.read_spec(image_processor, adapter.name, processor_config)


def compute_layout(spec: AnyLayoutSpec, width: int, height: int) -> ImageLayout:
    """The layout of one width x height image under `spec`; ImageRejected for sizes the family refuses."""
    return _cached_layout(spec, image_side("width", width), image_side("height", height))


@lru_cache(maxsize=16384)
def _cached_layout(spec: AnyLayoutSpec, width: int, height: int) -> ImageLayout:
    """Datasets repeat a few image sizes; the result is immutable, so sharing it is safe."""
    family = layout_family(spec.family)
    if not isinstance(spec, family.spec_type):
        expected = f"a {family.spec_type.__name__} (the settings the {family.name} layout is computed from)"
        raise ContractError("layout", type(spec).__name__, expected)
    return family.compute(spec, width, height)
