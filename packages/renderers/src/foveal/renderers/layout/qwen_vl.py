"""Layout adapters for the Qwen-VL families, which share one image processor and resize rule.

`qwen2_vl` covers Qwen2-VL and Qwen2.5-VL (patch 14, merge 2, temporal patch 2); `qwen3_vl` covers
Qwen3-VL, whose checkpoints configure the same `Qwen2VLImageProcessor` class with patch 16 and
`size={"shortest_edge": 65536, "longest_edge": 16777216}` (transformers 5.19 maps `qwen3_vl` to it).
The processor emits a single image as grid (1, h/patch, w/patch): the temporal patch is a copy of the
frame, so it widens each `pixel_values` row but never adds a grid step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foveal.renderers.errors import ContractError
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.smart_resize import smart_resize
from foveal.renderers.layout.spec import LayoutSpec

# Both backends of transformers' Qwen-VL image processor (torchvision and PIL/numpy).
QWEN_VL_PROCESSORS = frozenset({"Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil"})


def qwen_vl_layout(spec: LayoutSpec, width: int, height: int) -> ImageLayout:
    """Resize with HF's rule, then count patches and merged placeholder tokens."""
    resized_h, resized_w = smart_resize(height, width, spec.factor, spec.min_pixels, spec.max_pixels)
    return merged_patch_layout(spec, resized_h, resized_w)


def merged_patch_layout(spec: LayoutSpec, resized_h: int, resized_w: int) -> ImageLayout:
    """A single resized image as the grid (1, h/patch, w/patch) and `t*h*w / merge^2` placeholders (every family
    that shares Qwen2-VL's patching, whatever its resize rule)."""
    grid = (1, resized_h // spec.patch_size, resized_w // spec.patch_size)
    return ImageLayout(
        family=spec.family,
        fingerprint=spec.fingerprint,
        resized=(resized_h, resized_w),
        image_grid_thw=grid,
        num_placeholder_tokens=grid[0] * grid[1] * grid[2] // spec.merge_size**2,
    )


def read_qwen_vl_spec(
    image_processor: Any, family: str, processor_config: Mapping[str, Any] | None = None
) -> LayoutSpec:
    """Read the layout settings of a Qwen-VL image processor (either backend); `processor_config` is unused.

    The pixel bounds live in `size` ("shortest_edge" = min_pixels, "longest_edge" = max_pixels): the
    constructor folds legacy `min_pixels` / `max_pixels` kwargs into it and `resize` reads only it.
    """
    if image_processor.do_resize is not True:
        raise ContractError(
            "image_processor.do_resize", image_processor.do_resize, "True: the layout assumes smart_resize"
        )
    return LayoutSpec(
        family=family,
        patch_size=image_processor.patch_size,
        merge_size=image_processor.merge_size,
        temporal_patch_size=image_processor.temporal_patch_size,
        min_pixels=_size_entry(image_processor.size, "shortest_edge"),
        max_pixels=_size_entry(image_processor.size, "longest_edge"),
    )


def _size_entry(size: Any, key: str) -> Any:
    """One entry of `size`, a dict or HF SizeDict; a missing one is an error HF would raise at resize."""
    value = None if size is None else size.get(key)
    if value is None:
        raise ContractError(f"image_processor.size.{key}", size, f"a '{key}' pixel bound")
    return value


QWEN2_VL = LayoutFamily(
    name="qwen2_vl", processor_classes=QWEN_VL_PROCESSORS, read_spec=read_qwen_vl_spec, compute=qwen_vl_layout
)
QWEN3_VL = LayoutFamily(
    name="qwen3_vl", processor_classes=QWEN_VL_PROCESSORS, read_spec=read_qwen_vl_spec, compute=qwen_vl_layout
)
