"""Synthetic datasets that environments and the SFT demo share (Pillow only, deterministic by seed)."""

from foveal.verifiers.datasets.chat_jsonl import write_shapes_dataset
from foveal.verifiers.datasets.shapes import (
    CELLS,
    KINDS,
    PALETTE,
    QUESTION_KINDS,
    SPLITS,
    Question,
    Shape,
    ShapesExample,
    ShapesSpec,
    ShapesSpecError,
    draw_scene,
    generate_example,
    iter_examples,
)

__all__ = [
    "CELLS",
    "KINDS",
    "PALETTE",
    "QUESTION_KINDS",
    "SPLITS",
    "Question",
    "Shape",
    "ShapesExample",
    "ShapesSpec",
    "ShapesSpecError",
    "draw_scene",
    "generate_example",
    "iter_examples",
    "write_shapes_dataset",
]
