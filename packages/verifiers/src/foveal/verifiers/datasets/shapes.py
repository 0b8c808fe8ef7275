"""Synthetic shapes: scenes of coloured shapes and questions with short exact answers.

A scene is a white square split into a 2x2 grid; each occupied cell holds one shape (circle, square or
triangle) in one flat colour, and no two shapes share both colour and kind, so "the red circle" always
names one shape. Questions ask for a colour, a count or a position, and the answer is one or two words
("red", "3", "top left") that a verifier can compare exactly.

Everything is decided by a `random.Random` seeded from `(seed, split, index)`, so an example is the same
on every machine and can be regenerated alone; the train and eval splits draw from different seeds.
Shapes are drawn without anti-aliasing, so every pixel is either background or exactly a palette colour,
which is what lets tests check the answers against the pixels. Pillow only: no torch here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

Split = Literal["train", "eval"]
QuestionKind = Literal["color", "count", "position"]
Kind = Literal["circle", "square", "triangle"]

SPLITS: tuple[Split, ...] = ("train", "eval")
QUESTION_KINDS: tuple[QuestionKind, ...] = ("color", "count", "position")
KINDS: tuple[Kind, ...] = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 200, 20),
    "purple": (130, 40, 170),
}
CELLS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
"""Cell names, row-major: cell i sits in row i // 2 and column i % 2."""


class ShapesSpecError(ValueError):
    """A generator setting that cannot produce valid scenes; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class ShapesSpec:
    """What scenes look like: image side in pixels and how many shapes a scene holds."""

    image_size: int = 112
    min_shapes: int = 1
    max_shapes: int = 4

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ShapesSpecError("image_size", self.image_size, "at least 32 pixels")
        if not 1 <= self.min_shapes <= self.max_shapes <= len(CELLS):
            raise ShapesSpecError(
                "min_shapes/max_shapes", (self.min_shapes, self.max_shapes), f"1 <= min <= max <= {len(CELLS)}"
            )


@dataclass(frozen=True)
class Shape:
    """One drawn shape: kind, colour name, grid cell, and its bounding box `(x0, y0, x1, y1)` inclusive."""

    kind: Kind
    color: str
    cell: int
    box: tuple[int, int, int, int]

    @property
    def position(self) -> str:
        return CELLS[self.cell]

    @property
    def center(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) // 2, (y0 + y1) // 2


@dataclass(frozen=True)
class Question:
    """A question about a scene and its exact answer."""

    kind: QuestionKind
    text: str
    answer: str


@dataclass(frozen=True)
class ShapesExample:
    """One scene, its image and one question; `example_id` is unique across seeds, splits and indices."""

    example_id: str
    split: Split
    index: int
    shapes: tuple[Shape, ...]
    question: Question
    image: Image.Image

    def messages(self, image: object | None = None) -> list[dict[str, object]]:
        """The chat: a user turn with the image then the question, and the assistant's answer.

        `image` replaces the PIL image in the user turn (a path, for a JSONL file that points at PNGs).
        """
        content = [
            {"type": "image", "image": self.image if image is None else image},
            {"type": "text", "text": self.question.text},
        ]
        return [{"role": "user", "content": content}, {"role": "assistant", "content": self.question.answer}]


def generate_example(
    index: int, *, seed: int = 0, split: Split = "train", spec: ShapesSpec = ShapesSpec()
) -> ShapesExample:
    """Example `index` of `split` under `seed`: the same scene, image and question every time."""
    if split not in SPLITS:
        raise ShapesSpecError("split", split, f"one of {list(SPLITS)}")
    if index < 0:
        raise ShapesSpecError("index", index, "a non-negative index")
    rng = random.Random(f"foveal.shapes:{seed}:{split}:{index}")
    shapes = _scene(rng, spec)
    return ShapesExample(
        example_id=f"shapes-{seed}-{split}-{index:06d}",
        split=split,
        index=index,
        shapes=shapes,
        question=_question(rng, shapes),
        image=draw_scene(shapes, spec.image_size),
    )


def iter_examples(
    count: int, *, seed: int = 0, split: Split = "train", spec: ShapesSpec = ShapesSpec(), start: int = 0
) -> Iterator[ShapesExample]:
    """Examples `start .. start + count - 1` of a split, generated one at a time (nothing is kept)."""
    for index in range(start, start + count):
        yield generate_example(index, seed=seed, split=split, spec=spec)


def draw_scene(shapes: tuple[Shape, ...], image_size: int) -> Image.Image:
    """The scene as an RGB image; flat colours, no anti-aliasing (pixels are palette colours or white)."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        fill = PALETTE[shape.color]
        x0, y0, x1, y1 = shape.box
        if shape.kind == "circle":
            draw.ellipse(shape.box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(shape.box, fill=fill)
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image


def _scene(rng: random.Random, spec: ShapesSpec) -> tuple[Shape, ...]:
    """Distinct cells and distinct (colour, kind) pairs, so every shape is named by colour and kind."""
    count = rng.randint(spec.min_shapes, spec.max_shapes)
    cells = sorted(rng.sample(range(len(CELLS)), count))
    looks = rng.sample([(kind, color) for kind in KINDS for color in PALETTE], count)
    return tuple(
        Shape(kind, color, cell, _box(rng, cell, spec.image_size)) for cell, (kind, color) in zip(cells, looks)
    )


def _box(rng: random.Random, cell: int, image_size: int) -> tuple[int, int, int, int]:
    """A square box inside the cell: 55-80% of the cell's side, placed anywhere it fits with a margin."""
    half = image_size // 2
    side = rng.randint(int(half * 0.55), int(half * 0.8))
    margin = max(2, half // 16)
    x = (cell % 2) * half + rng.randint(margin, half - side - margin)
    y = (cell // 2) * half + rng.randint(margin, half - side - margin)
    return x, y, x + side - 1, y + side - 1


def _question(rng: random.Random, shapes: tuple[Shape, ...]) -> Question:
    kind = rng.choice(QUESTION_KINDS)
    if kind == "color":
        return _color_question(rng, shapes)
    if kind == "count":
        return _count_question(rng, shapes)
    target = rng.choice(shapes)
    return Question("position", f"Where is the {target.color} {target.kind}?", target.position)


def _color_question(rng: random.Random, shapes: tuple[Shape, ...]) -> Question:
    """Name the shape by kind alone when it is the only one of its kind, else by kind and cell."""
    target = rng.choice(shapes)
    if sum(shape.kind == target.kind for shape in shapes) == 1:
        return Question("color", f"What color is the {target.kind}?", target.color)
    return Question("color", f"What color is the {target.kind} in the {target.position}?", target.color)


def _count_question(rng: random.Random, shapes: tuple[Shape, ...]) -> Question:
    """How many shapes of a kind (possibly none), of a colour, or in all."""
    what = rng.choice(("kind", "color", "all"))
    if what == "kind":
        kind = rng.choice(KINDS)
        return Question("count", f"How many {kind}s are there?", str(sum(s.kind == kind for s in shapes)))
    if what == "color":
        color = rng.choice(sorted(PALETTE))
        return Question("count", f"How many {color} shapes are there?", str(sum(s.color == color for s in shapes)))
    return Question("count", "How many shapes are there?", str(len(shapes)))
