"""Synthetic datasets that environments and the SFT demo share, deterministic by seed.

The shapes generator (Pillow only) is re-exported here for the SFT demo; `datasets.charts` (matplotlib)
and `datasets.arithmetic` are imported from their modules, so this package stays cheap to import.
"""

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
