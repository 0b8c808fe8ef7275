"""Synthetic colours: one image filled with one noisy colour, and the question "What color is this image?".

The smallest task that only a model that sees can solve: the question is the same for every example, so the
text alone carries no information about the answer, and the answer is one word out of `colors` (chance
1 / colors). Each image is its colour shifted by a per-image shade and per-pixel noise of up to `noise` per
channel (clipped to 0-255), so no two images are alike but the colour stays unambiguous: palette colours
lie far further apart than the noise reaches.

Everything is decided by a `random.Random` seeded from `(seed, split, index)`, so an example is the same
on every machine and can be regenerated alone; the train and eval splits draw from different seeds.
Pillow only: no torch here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from foveal.verifiers.datasets.shapes import SPLITS, Split

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 170),
    "orange": (240, 130, 20),
    "black": (20, 20, 20),
    "white": (235, 235, 235),
}
"""The colours, in the order `ColorsSpec.colors` takes them (the first n)."""
QUESTION = "What color is this image?"


class ColorsSpecError(ValueError):
    """A generator setting that cannot produce valid images; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class ColorsSpec:
    """Image side in pixels, how many palette colours are used, and the noise per channel."""

    image_size: int = 56
    colors: int = 6
    noise: int = 24

    def __post_init__(self) -> None:
        if self.image_size < 28:
            raise ColorsSpecError("image_size", self.image_size, "at least 28 pixels")
        if not 2 <= self.colors <= len(PALETTE):
            raise ColorsSpecError("colors", self.colors, f"2 <= colors <= {len(PALETTE)}")
        if not 0 <= self.noise <= 48:
            raise ColorsSpecError("noise", self.noise, "0 <= noise <= 48 (more blurs colours together)")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(PALETTE)[: self.colors]


@dataclass(frozen=True)
class ColorExample:
    """One image and its colour; `example_id` is unique across seeds, splits and indices."""

    example_id: str
    color: str
    image: Image.Image


def generate_color_example(
    index: int, *, seed: int = 0, split: Split = "train", spec: ColorsSpec = ColorsSpec()
) -> ColorExample:
    """Example `index` of `split` under `seed`: the same colour and pixels every time."""
    if split not in SPLITS:
        raise ColorsSpecError("split", split, f"one of {list(SPLITS)}")
    if index < 0:
        raise ColorsSpecError("index", index, "a non-negative index")
    rng = random.Random(f"foveal.colors:{seed}:{split}:{index}")
    color = rng.choice(spec.names)
    return ColorExample(f"colors-{seed}-{split}-{index:06d}", color, noisy_fill(PALETTE[color], spec, rng))


def noisy_fill(rgb: tuple[int, int, int], spec: ColorsSpec, rng: random.Random) -> Image.Image:
    """An image of `rgb` plus a shade for the whole image and noise per pixel, each within +-noise/2.

    Each channel plane is random bytes mapped through a 256-entry table (byte -> clipped value), so the work
    per pixel happens in Pillow, not in Python."""
    half = spec.noise // 2
    spread = 2 * half + 1
    size = (spec.image_size, spec.image_size)
    planes = []
    for channel in rgb:
        shade = channel + rng.randint(-half, half)
        table = bytes(min(255, max(0, shade + byte % spread - half)) for byte in range(256))
        planes.append(Image.frombytes("L", size, rng.randbytes(size[0] * size[1]).translate(table)))
    return Image.merge("RGB", planes)
