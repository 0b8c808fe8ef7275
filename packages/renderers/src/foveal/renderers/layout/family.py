"""The adapter shape every layout family fills in: read settings, compute one image's layout."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.spec import LayoutSpec


@dataclass(frozen=True, slots=True)
class LayoutFamily:
    """One layout family: a name, the HF image processors it understands, and two pure functions.

    `read_spec(image_processor, family_name, processor_config)` reads the layout settings of a processor
    instance (and, where the processor rather than the image processor holds one, of the model's
    processor_config.json); `compute(spec, width, height)` returns the layout of one image (sides already
    validated). `spec_type` is the spec class `compute` takes (`LayoutSpec` for the Qwen-VL families).
    Adding a family means one adapter module and one line in the registry, no branches elsewhere.
    """

    name: str
    processor_classes: frozenset[str]
    read_spec: Callable[[Any, str, Mapping[str, Any] | None], Any]
    compute: Callable[[Any, int, int], ImageLayout]
    spec_type: type = LayoutSpec
