"""Real images for the benchmarks: seeded pillow drawings that compress like screenshots and photos do.

Pure noise would make every PNG as large as its pixels and flat colour would make it nearly free; a
gradient background with shapes, text-like bars and light sensor noise lands in between, so the store's
file sizes (and the decoder's work) are of a realistic order. Layout and pixel tensors depend only on the
size, never on the content.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def picture(width: int, height: int, seed: int) -> Image.Image:
    """An RGB `width` x `height` image drawn from `seed`."""
    rng = np.random.default_rng(seed)
    xs = np.arange(width, dtype=np.float32)[None, :, None]
    ys = np.arange(height, dtype=np.float32)[:, None, None]
    base = rng.integers(0, 256, size=3).astype(np.float32)
    slope = rng.uniform(-0.1, 0.1, size=(2, 3)).astype(np.float32)
    pixels = base + xs * slope[0] + ys * slope[1] + rng.integers(-4, 5, size=(height, width, 3), dtype=np.int8)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(8 + (width * height) // 40_000):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(8, max(width // 3, 9))), y0 + int(rng.integers(8, max(height // 3, 9)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), outline=colour, width=3)
        else:  # a line of "text": short dark bars
            for offset in range(0, min(x1 - x0, width - x0), 9):
                draw.rectangle((x0 + offset, y0, x0 + offset + 6, y0 + 10), fill=(20, 20, 20))
    return image
