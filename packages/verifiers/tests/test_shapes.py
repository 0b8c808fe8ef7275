"""The shapes generator: deterministic by seed, and every answer agrees with what the pixels show.

The pixel check does not trust the generator's own shape list: it finds every flat-colour blob in the
image, classifies it by how much of its bounding box it fills (square ~1, circle ~pi/4, triangle ~1/2),
places it in a grid cell by its centre, and answers the question text from that reading alone.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.verifiers.datasets import (
    CELLS,
    PALETTE,
    QUESTION_KINDS,
    ShapesSpec,
    ShapesSpecError,
    generate_example,
    iter_examples,
    write_shapes_dataset,
)


@dataclass(frozen=True)
class Blob:
    color: str
    kind: str
    cell: str


def blobs_in(image: Image.Image) -> list[Blob]:
    """Every 4-connected region of one palette colour, read from the pixels."""
    pixels = np.asarray(image.convert("RGB"))
    found = []
    for color, rgb in PALETTE.items():
        mask = np.all(pixels == np.array(rgb, dtype=np.uint8), axis=-1).tolist()
        for y, x in zip(*np.nonzero(np.asarray(mask))):
            if mask[y][x]:
                found.append(_blob(color, _flood(mask, int(y), int(x)), pixels.shape[0]))
    return found


def _flood(mask: list[list[bool]], y: int, x: int) -> list[tuple[int, int]]:
    """The region around (y, x), cleared from `mask` as it is visited."""
    points, queue = [], deque([(y, x)])
    mask[y][x] = False
    height, width = len(mask), len(mask[0])
    while queue:
        cy, cx = queue.popleft()
        points.append((cy, cx))
        for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
            if 0 <= ny < height and 0 <= nx < width and mask[ny][nx]:
                mask[ny][nx] = False
                queue.append((ny, nx))
    return points


def _blob(color: str, points: list[tuple[int, int]], size: int) -> Blob:
    ys, xs = [p[0] for p in points], [p[1] for p in points]
    fill = len(points) / ((max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1))
    kind = "square" if fill > 0.95 else "circle" if fill > 0.68 else "triangle"
    row, col = int((min(ys) + max(ys)) / 2 >= size / 2), int((min(xs) + max(xs)) / 2 >= size / 2)
    return Blob(color, kind, CELLS[2 * row + col])


def answer_from_pixels(question: str, blobs: list[Blob]) -> str:
    """Answer the generator's question templates using only the blobs read from the image."""
    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        (match,) = [b for b in blobs if b.kind == m[1]]
        return match.color
    if m := re.fullmatch(r"What color is the (\w+) in the (.+)\?", question):
        (match,) = [b for b in blobs if b.kind == m[1] and b.cell == m[2]]
        return match.color
    if m := re.fullmatch(r"Where is the (\w+) (\w+)\?", question):
        (match,) = [b for b in blobs if b.color == m[1] and b.kind == m[2]]
        return match.cell
    if question == "How many shapes are there?":
        return str(len(blobs))
    if m := re.fullmatch(r"How many (\w+)s are there\?", question):
        return str(sum(b.kind == m[1] for b in blobs))
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", question):
        return str(sum(b.color == m[1] for b in blobs))
    raise AssertionError(f"question the reader does not know: {question!r}")


def test_answers_agree_with_the_pixels() -> None:
    for example in iter_examples(80, seed=3, split="train"):
        blobs = blobs_in(example.image)
        assert len(blobs) == len(example.shapes), example.example_id
        assert answer_from_pixels(example.question.text, blobs) == example.question.answer, example.example_id


def test_every_shape_is_drawn_in_its_colour_and_cell() -> None:
    for example in iter_examples(40, seed=5, split="eval"):
        pixels = example.image.load()
        for shape in example.shapes:
            assert pixels[shape.center] == PALETTE[shape.color]
            x, y = shape.center
            half = example.image.width // 2
            assert CELLS[2 * (y >= half) + (x >= half)] == shape.position


def test_same_seed_same_examples_and_other_seeds_differ() -> None:
    first = [generate_example(i, seed=7) for i in range(10)]
    again = [generate_example(i, seed=7) for i in range(10)]
    other = [generate_example(i, seed=8) for i in range(10)]
    assert [(e.shapes, e.question) for e in first] == [(e.shapes, e.question) for e in again]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(first, again))
    assert [(e.shapes, e.question) for e in first] != [(e.shapes, e.question) for e in other]


def test_train_and_eval_splits_are_different_scenes() -> None:
    train = {(e.shapes, e.question) for e in iter_examples(50, split="train")}
    evals = {(e.shapes, e.question) for e in iter_examples(50, split="eval")}
    assert len(train & evals) < 5


def test_all_question_kinds_and_answers_are_short() -> None:
    examples = list(iter_examples(200, seed=0))
    assert {e.question.kind for e in examples} == set(QUESTION_KINDS)
    assert all(1 <= len(e.question.answer.split()) <= 2 for e in examples)
    assert len({e.example_id for e in examples}) == len(examples)


def test_messages_put_the_image_before_the_question() -> None:
    example = generate_example(0)
    user, assistant = example.messages(image="images/x.png")
    assert user["content"][0] == {"type": "image", "image": "images/x.png"}
    assert user["content"][1] == {"type": "text", "text": example.question.text}
    assert assistant == {"role": "assistant", "content": example.question.answer}


def test_jsonl_dataset_points_at_the_pngs_it_wrote(tmp_path: Path) -> None:
    path = write_shapes_dataset(tmp_path / "data", 12, seed=2, split="eval")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 12
    for row, example in zip(rows, iter_examples(12, seed=2, split="eval")):
        image_path = path.parent / row["messages"][0]["content"][0]["image"]
        with Image.open(image_path) as image:
            assert image.convert("RGB").tobytes() == example.image.tobytes()
        assert row["answer"] == row["messages"][1]["content"] == example.question.answer


def test_matching_dataset_is_reused_and_a_different_one_regenerated(tmp_path: Path) -> None:
    path = write_shapes_dataset(tmp_path, 4, seed=1)
    stamp = path.stat().st_mtime_ns
    assert write_shapes_dataset(tmp_path, 4, seed=1).stat().st_mtime_ns == stamp
    bigger = write_shapes_dataset(tmp_path, 6, seed=1)
    assert len(bigger.read_text().splitlines()) == 6


def test_impossible_specs_name_the_field() -> None:
    with pytest.raises(ShapesSpecError, match="image_size"):
        ShapesSpec(image_size=8)
    with pytest.raises(ShapesSpecError, match="min_shapes"):
        ShapesSpec(min_shapes=3, max_shapes=2)
    with pytest.raises(ShapesSpecError, match="split"):
        generate_example(0, split="test")  # type: ignore[arg-type]
