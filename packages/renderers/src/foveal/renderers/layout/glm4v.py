"""Layout adapter for GLM-4.1V (`glm4v`): Qwen2-VL's patch grid with GLM's own resize rule.

Glm4vImageProcessor cuts 14-pixel patches, merges 2 x 2 of them into one `<|image|>` token and copies a single
image into both frames of its temporal patch of 2, exactly like Qwen2-VL: a single image is the grid
(1, H / patch, W / patch) with `t*h*w / merge_size^2` placeholders. Only its `smart_resize` differs:

- it is called with `num_frames = temporal_patch_size` (2), and the pixel bounds are compared with
  `frames * H * W`, so an image is shrunk or grown as if it were two frames (half the pixels Qwen's rule allows);
- a side shorter than the factor (patch * merge = 28) first scales the whole image up so that its shorter
  side reaches the factor (`int(side * scale)`, HF's float steps), before the aspect-ratio check;
- the aspect-ratio check is a float division `long / short > 200` of those scaled sides.

Bounds come from `size` ("shortest_edge" = min_pixels, "longest_edge" = max_pixels), as for Qwen2-VL; the
released GLM-4.1V-9B-Thinking preprocessor_config.json has 12544 and 47040000.
"""

from __future__ import annotations

import math

from foveal.renderers.errors import ImageRejected
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.qwen_vl import merged_patch_layout, read_qwen_vl_spec
from foveal.renderers.layout.smart_resize import MAX_ASPECT_RATIO
from foveal.renderers.layout.spec import LayoutSpec

# Both backends of transformers' GLM-4.1V image processor (torchvision and PIL/numpy).
GLM4V_PROCESSORS = frozenset({"Glm4vImageProcessor", "Glm4vImageProcessorPil"})


def glm4v_smart_resize(
    height: int, width: int, factor: int, temporal_factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) after GLM-4.1V's resize of one image (`num_frames = temporal_factor`), HF's float steps."""
    frames = temporal_factor
    h: int | float = height
    w: int | float = width
    if h < factor or w < factor:
        scale = max(factor / h, factor / w)
        h, w = int(h * scale), int(w * scale)
    if min(h, w) == 0 or max(h, w) / min(h, w) > MAX_ASPECT_RATIO:
        raise ImageRejected("image.aspect_ratio", f"{width}x{height}", f"long side / short side <= {MAX_ASPECT_RATIO}")
    h_bar = round(h / factor) * factor
    w_bar = round(w / factor) * factor
    t_bar = round(frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((frames * h * w) / max_pixels)
        h_bar = max(factor, math.floor(h / beta / factor) * factor)
        w_bar = max(factor, math.floor(w / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * h * w))
        h_bar = math.ceil(h * beta / factor) * factor
        w_bar = math.ceil(w * beta / factor) * factor
    return h_bar, w_bar


def glm4v_layout(spec: LayoutSpec, width: int, height: int) -> ImageLayout:
    """GLM's resize, then Qwen-VL's patch grid and merged placeholder count."""
    resized_h, resized_w = glm4v_smart_resize(
        height, width, spec.factor, spec.temporal_patch_size, spec.min_pixels, spec.max_pixels
    )
    return merged_patch_layout(spec, resized_h, resized_w)


GLM4V = LayoutFamily(
    name="glm4v", processor_classes=GLM4V_PROCESSORS, read_spec=read_qwen_vl_spec, compute=glm4v_layout
)
