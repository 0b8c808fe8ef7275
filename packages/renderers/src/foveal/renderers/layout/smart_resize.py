"""Qwen-VL's resize rule (HF `smart_resize`), reimplemented without running the image processor.

The rule: round each side to the nearest multiple of `factor`; if that area exceeds `max_pixels`,
scale both sides down by one common ratio and floor to the factor; if it falls below `min_pixels`,
scale up and ceil. Aspect ratios above 200 are refused.

Integers wherever HF's floats are exact (the rounding to the factor, the area comparisons, the aspect
check). The two rescaling branches deliberately repeat HF's binary64 steps instead of exact rational
arithmetic: at exact ties the float result differs, e.g. a 19x19 image with min_pixels 3136 and
factor 28 has exact scale 56/19, so the exact answer is 56x56, while HF's rounded sqrt lands a hair
above 2.0 and ceils to 84x84. The inference server's processor decides the real grid, so we follow
it. Python floats are IEEE-754 binary64 with correctly rounded `/` and `math.sqrt`, so these steps
give the same bits as HF's own Python code on every platform.
"""

from __future__ import annotations

import math

from foveal.renderers.errors import ImageRejected

MAX_ASPECT_RATIO = 200


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after Qwen-VL's resize: multiples of `factor`, area within the pixel bounds.

    Sides must be positive ints (checked by the caller); raises ImageRejected past 200:1.
    """
    _check_aspect_ratio(height, width)
    h_bar = _round_half_even(height, factor) * factor
    w_bar = _round_half_even(width, factor) * factor
    if h_bar * w_bar > max_pixels:
        return _shrink(height, width, factor, max_pixels)
    if h_bar * w_bar < min_pixels:
        return _grow(height, width, factor, min_pixels)
    return h_bar, w_bar


def _check_aspect_ratio(height: int, width: int) -> None:
    """HF compares the float quotient with 200; the integer product agrees for any side below 2**46."""
    long_side, short_side = max(height, width), min(height, width)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise ImageRejected(
            "image.aspect_ratio", f"{width}x{height}", f"long side / short side <= {MAX_ASPECT_RATIO}"
        )


def _round_half_even(value: int, factor: int) -> int:
    """`round(value / factor)` as Python does it: halves go to the even neighbour (so 14/28 -> 0)."""
    quotient, remainder = divmod(value, factor)
    if 2 * remainder > factor or (2 * remainder == factor and quotient % 2 == 1):
        return quotient + 1
    return quotient


def _shrink(height: int, width: int, factor: int, max_pixels: int) -> tuple[int, int]:
    """Scale down by sqrt(area / max_pixels), floor to the factor, never below one factor."""
    beta = math.sqrt(height * width / max_pixels)
    return (
        max(factor, math.floor(height / beta / factor) * factor),
        max(factor, math.floor(width / beta / factor) * factor),
    )


def _grow(height: int, width: int, factor: int, min_pixels: int) -> tuple[int, int]:
    """Scale up by sqrt(min_pixels / area) and ceil to the factor."""
    beta = math.sqrt(min_pixels / (height * width))
    return math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
