"""The benchmark's seeded workload: conversations of text, one image or several, and real image files.

Images are drawn with Pillow and written to disk before any timing starts. Two kinds, as datasets mix
them: photo-like JPEGs (gradient, shapes and sensor-like noise, which makes lossless encoding work hard)
and screenshot-like PNGs (flat fills and text, which compress well). Sides run 256..2048 px. Every
image is distinct, so the first render of a conversation is a first sight of each of its images.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MIN_SIDE, MAX_SIDE = 256, 2048
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 3 / 2, 2 / 3)
SHAPES = {"text": 0.4, "one_image": 0.35, "multi_image": 0.25}
"""Share of conversations by how many images they show (multi: 2..4)."""
PHOTO_SHARE = 0.6
"""Share of images that are photo-like JPEGs; the rest are screenshot-like PNGs."""
_WORDS = (
    "describe the chart compare these two pictures what changed between frames count the objects read the "
    "label on the left summarize the slide is the cat asleep which one is larger explain step by step"
).split()
_NOISE_TILE = 256


@dataclass(frozen=True)
class ImageSpec:
    """One image file to draw: where, how large, and whether it is a JPEG photo or a PNG screenshot."""

    path: Path
    width: int
    height: int
    photo: bool
    seed: int


@dataclass(frozen=True)
class Conversation:
    """One benchmark sample: chat turns whose user turns may show images (paths into the image folder)."""

    turns: tuple[tuple[str, str, tuple[Path, ...]], ...]
    """(role, text, image paths shown before the text) per message."""
    add_generation_prompt: bool

    @property
    def images(self) -> tuple[Path, ...]:
        return tuple(path for _, _, paths in self.turns for path in paths)

    def foveal_messages(self) -> list[dict[str, Any]]:
        """The messages a Foveal renderer takes: image parts carry the file path."""
        return [
            _message(role, text, [{"type": "image", "image": str(path)} for path in paths])
            for role, text, paths in self.turns
        ]

    def text_only(self) -> Conversation:
        """The same turns without their images, for a text-only family."""
        return Conversation(tuple((role, text, ()) for role, text, _ in self.turns), self.add_generation_prompt)

    def text_messages(self) -> list[dict[str, Any]]:
        """Plain-string messages, as text-only chat templates (Llama 3's) take them; both paths get these."""
        return [{"role": role, "content": text} for role, text, _ in self.turns]

    def hf_messages(self) -> list[dict[str, Any]]:
        """The messages `processor.apply_chat_template` takes: image parts are bare `{"type": "image"}`."""
        return [_message(role, text, [{"type": "image"} for _ in paths]) for role, text, paths in self.turns]


def _message(role: str, text: str, image_parts: list[dict[str, Any]]) -> dict[str, Any]:
    """User turns as content parts; system and assistant turns as plain text (GLM-4.1V's template prints a
    system message's content as it is, so a list of parts would show up as its Python repr)."""
    if role != "user":
        return {"role": role, "content": text}
    return {"role": role, "content": [*image_parts, {"type": "text", "text": text}]}


def make_workload(n: int, seed: int, image_dir: Path, max_side: int = MAX_SIDE) -> list[Conversation]:
    """`n` seeded conversations; their images are drawn into `image_dir` (in parallel threads)."""
    rng = np.random.default_rng(seed)
    specs: list[ImageSpec] = []
    conversations = [_conversation(rng, image_dir, specs, max_side) for _ in range(n)]
    noise = np.random.default_rng(seed + 1).normal(0, 7, (_NOISE_TILE, _NOISE_TILE, 3)).astype(np.int16)
    with ThreadPoolExecutor() as pool:  # Pillow and numpy release the GIL while drawing and encoding
        list(pool.map(lambda spec: draw_image(spec, noise), specs))
    return conversations


def _conversation(rng: np.random.Generator, image_dir: Path, specs: list[ImageSpec], max_side: int) -> Conversation:
    shape = rng.choice(list(SHAPES), p=list(SHAPES.values()))
    n_images = int(rng.integers(2, 5)) if shape == "multi_image" else int(shape == "one_image")
    n_rounds = int(rng.integers(1, 4))
    image_round = int(rng.integers(0, n_rounds))
    turns: list[tuple[str, str, tuple[Path, ...]]] = []
    if rng.random() < 0.3:
        turns.append(("system", "You are a careful visual assistant.", ()))
    for round_index in range(n_rounds):
        shown = n_images if round_index == image_round else 0
        paths = tuple(_new_image(rng, image_dir, specs, max_side) for _ in range(shown))
        turns.append(("user", _sentence(rng, 6, 30), paths))
        turns.append(("assistant", _sentence(rng, 10, 80), ()))
    prompt = bool(rng.random() < 0.5)
    if prompt:
        turns.pop()  # ends on a user turn: an RL prompt awaiting the model's reply
    return Conversation(tuple(turns), add_generation_prompt=prompt)


def _sentence(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS, int(rng.integers(low, high)))) + "."


def _new_image(rng: np.random.Generator, image_dir: Path, specs: list[ImageSpec], max_side: int) -> Path:
    long_side = math.exp(rng.uniform(math.log(MIN_SIDE), math.log(max_side)))
    aspect = float(rng.choice(ASPECTS))
    width, height = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
    width, height = (int(np.clip(round(side), MIN_SIDE, max_side)) for side in (width, height))
    photo = bool(rng.random() < PHOTO_SHARE)
    path = image_dir / f"image-{len(specs):05d}.{'jpg' if photo else 'png'}"
    specs.append(ImageSpec(path, width, height, photo, int(rng.integers(2**31))))
    return path


def draw_image(spec: ImageSpec, noise: np.ndarray) -> None:
    """Gradient, rectangles, ellipses and text; photos get tiled noise and are saved as JPEG (q=90)."""
    rng = np.random.default_rng(spec.seed)
    w, h = spec.width, spec.height
    corners = rng.uniform(40, 215, (3, 3))
    xs, ys = np.linspace(0, 1, w, dtype=np.float32), np.linspace(0, 1, h, dtype=np.float32)
    planes = [c[0] + (c[1] - c[0]) * xs[None, :] + (c[2] - c[0]) * ys[:, None] for c in corners]
    image = Image.fromarray(np.stack(planes, axis=-1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 24))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(8, w // 3)), y0 + int(rng.integers(8, h // 3))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.4 else draw.rectangle)(box, fill=fill)
    for _ in range(int(rng.integers(4, 16))):
        draw.text((int(rng.integers(0, w)), int(rng.integers(0, h))), _sentence(rng, 2, 6), fill=(0, 0, 0))
    if spec.photo:
        image = _add_noise(image, noise, rng)
        image.save(spec.path, format="JPEG", quality=90)
    else:
        image.save(spec.path, format="PNG")


def _add_noise(image: Image.Image, noise: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Sensor-like noise from a shared tile at a random offset (drawing fresh noise per pixel is slow)."""
    w, h = image.size
    reps = (h // _NOISE_TILE + 2, w // _NOISE_TILE + 2, 1)
    dy, dx = (int(v) for v in rng.integers(0, _NOISE_TILE, 2))
    tiled = np.tile(noise, reps)[dy : dy + h, dx : dx + w]
    pixels = np.asarray(image, dtype=np.int16) + tiled
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
