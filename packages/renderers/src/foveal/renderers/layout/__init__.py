"""Pure per-family image layout: (processor settings, width, height) -> grid and placeholder count.

Computed without pixels or torch, so the renderer can expand placeholders and write descriptors
cheaply; readers re-derive it with their real processor and compare fingerprints and grids.
"""

from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.gemma3 import Gemma3LayoutSpec
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.internvl import InternVLLayoutSpec
from foveal.renderers.layout.smolvlm import SmolVLMLayoutSpec
from foveal.renderers.layout.registry import compute_layout, family_names, layout_family, spec_from_image_processor
from foveal.renderers.layout.spec import AnyLayoutSpec, LayoutSpec, with_pixel_bounds

__all__ = [
    "AnyLayoutSpec",
    "Gemma3LayoutSpec",
    "ImageLayout",
    "InternVLLayoutSpec",
    "LayoutFamily",
    "LayoutSpec",
    "SmolVLMLayoutSpec",
    "compute_layout",
    "family_names",
    "layout_family",
    "spec_from_image_processor",
    "with_pixel_bounds",
]
