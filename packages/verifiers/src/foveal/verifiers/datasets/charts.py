"""Synthetic charts: bar and line charts drawn with matplotlib, and questions with exact answers.

A chart plots 3-6 small integer values over short category labels ("ant", "bee", ...). Questions read
one value ("What is the value of bee?" -> "7") or compare two categories ("Which is larger, ant or
cat?" -> "cat"; the two always differ). The y axis runs from 0 to `max_value + 1` with a tick and a
grid line at every integer, so every value can be read off the image.

Deterministic like the shapes generator: a `random.Random` seeded from `(seed, split, index)` decides the
chart, and drawing uses matplotlib's object API (no pyplot, no global state) with fixed axes margins, so
tests can map pixels back to values. The series colour never appears elsewhere in the chart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from foveal.verifiers.datasets.shapes import SPLITS, Split

ChartKind = Literal["bar", "line"]
ChartQuestionKind = Literal["value", "compare"]
CHART_KINDS: tuple[ChartKind, ...] = ("bar", "line")
CHART_QUESTION_KINDS: tuple[ChartQuestionKind, ...] = ("value", "compare")
LABELS: tuple[str, ...] = ("ant", "bee", "cat", "dog", "elk", "fox", "gnu", "hen")
SERIES_COLORS: dict[str, tuple[int, int, int]] = {
    "blue": (31, 119, 180),
    "orange": (255, 127, 14),
    "green": (44, 160, 44),
    "red": (214, 39, 40),
    "purple": (148, 103, 189),
}
AXES_BOX = (0.14, 0.14, 0.97, 0.96)
"""Axes position as figure fractions (left, bottom, right, top), fixed so pixels map to values."""
DPI = 100


class ChartsSpecError(ValueError):
    """A generator setting that cannot produce readable charts; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class ChartsSpec:
    """Image size in pixels, how many categories a chart has, and the largest value plotted."""

    width: int = 224
    height: int = 168
    min_points: int = 3
    max_points: int = 6
    max_value: int = 9

    def __post_init__(self) -> None:
        if self.width < 96 or self.height < 96:
            raise ChartsSpecError("width/height", (self.width, self.height), "at least 96 x 96 pixels")
        if not 2 <= self.min_points <= self.max_points <= len(LABELS):
            expected = f"2 <= min <= max <= {len(LABELS)}"
            raise ChartsSpecError("min_points/max_points", (self.min_points, self.max_points), expected)
        if not 2 <= self.max_value <= 20:
            raise ChartsSpecError("max_value", self.max_value, "between 2 and 20 (one grid line per integer)")


@dataclass(frozen=True)
class ChartQuestion:
    kind: ChartQuestionKind
    text: str
    answer: str


@dataclass(frozen=True)
class ChartPlan:
    """What one chart shows and asks, before drawing; `example_id` is unique across seeds, splits and indices."""

    example_id: str
    split: Split
    index: int
    kind: ChartKind
    labels: tuple[str, ...]
    values: tuple[int, ...]
    color: str
    question: ChartQuestion


@dataclass(frozen=True)
class ChartExample(ChartPlan):
    """A planned chart and its image."""

    image: Image.Image


def generate_chart(
    index: int, *, seed: int = 0, split: Split = "train", spec: ChartsSpec = ChartsSpec()
) -> ChartExample:
    """Chart `index` of `split` under `seed`: the same chart, image and question every time."""
    plan = plan_chart(index, seed=seed, split=split, spec=spec)
    return ChartExample(**vars(plan), image=draw_chart(plan.kind, plan.labels, plan.values, plan.color, spec))


def plan_chart(index: int, *, seed: int = 0, split: Split = "train", spec: ChartsSpec = ChartsSpec()) -> ChartPlan:
    """The chart `generate_chart` draws, without drawing it (drawing costs ~0.15 s, planning microseconds)."""
    if split not in SPLITS:
        raise ChartsSpecError("split", split, f"one of {list(SPLITS)}")
    if index < 0:
        raise ChartsSpecError("index", index, "a non-negative index")
    rng = random.Random(f"foveal.charts:{seed}:{split}:{index}")
    kind = rng.choice(CHART_KINDS)
    count = rng.randint(spec.min_points, spec.max_points)
    labels = tuple(rng.sample(LABELS, count))
    values = _values(rng, count, spec.max_value)
    color = rng.choice(sorted(SERIES_COLORS))
    return ChartPlan(
        example_id=f"charts-{seed}-{split}-{index:06d}",
        split=split,
        index=index,
        kind=kind,
        labels=labels,
        values=values,
        color=color,
        question=_question(rng, kind, labels, values),
    )


def iter_charts(
    count: int, *, seed: int = 0, split: Split = "train", spec: ChartsSpec = ChartsSpec(), start: int = 0
) -> Iterator[ChartExample]:
    for index in range(start, start + count):
        yield generate_chart(index, seed=seed, split=split, spec=spec)


def draw_chart(
    kind: ChartKind, labels: tuple[str, ...], values: tuple[int, ...], color: str, spec: ChartsSpec
) -> Image.Image:
    """The chart as an RGB image of `spec.width` x `spec.height` pixels."""
    figure = Figure(figsize=(spec.width / DPI, spec.height / DPI), dpi=DPI, facecolor="white")
    left, bottom, right, top = AXES_BOX
    axes = figure.add_axes((left, bottom, right - left, top - bottom))
    rgb = tuple(channel / 255 for channel in SERIES_COLORS[color])
    positions = range(len(values))
    if kind == "bar":
        axes.bar(positions, values, width=0.6, color=rgb)
    else:
        axes.plot(positions, values, color=rgb, marker="o", markersize=5, linewidth=1.5)
    axes.set_xlim(-0.6, len(values) - 0.4)
    axes.set_ylim(0, spec.max_value + 1)
    axes.set_xticks(list(positions), list(labels), fontsize=7)
    axes.set_yticks(range(spec.max_value + 2), [str(v) for v in range(spec.max_value + 2)], fontsize=6)
    axes.grid(axis="y", color="#d0d0d0", linewidth=0.6)
    axes.set_axisbelow(True)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def _values(rng: random.Random, count: int, max_value: int) -> tuple[int, ...]:
    """Values in 1..max_value, not all equal (so a comparison always exists)."""
    while True:
        values = tuple(rng.randint(1, max_value) for _ in range(count))
        if len(set(values)) > 1:
            return values


_TEMPLATES = {
    ("bar", "value"): "What is the value of {a}?",
    ("line", "value"): "What is the value of the line at {a}?",
    ("bar", "compare"): "Which is larger, {a} or {b}?",
    ("line", "compare"): "Is the line higher at {a} or at {b}?",
}


def _question(rng: random.Random, kind: ChartKind, labels: tuple[str, ...], values: tuple[int, ...]) -> ChartQuestion:
    question_kind = rng.choice(CHART_QUESTION_KINDS)
    if question_kind == "value":
        i = rng.randrange(len(labels))
        return ChartQuestion("value", _TEMPLATES[kind, "value"].format(a=labels[i]), str(values[i]))
    pairs = [(i, j) for i in range(len(values)) for j in range(len(values)) if i != j and values[i] != values[j]]
    i, j = rng.choice(pairs)
    winner = labels[i] if values[i] > values[j] else labels[j]
    return ChartQuestion("compare", _TEMPLATES[kind, "compare"].format(a=labels[i], b=labels[j]), winner)
