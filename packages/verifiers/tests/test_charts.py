"""The charts generator: deterministic by seed, and every answer agrees with what the pixels show.

The pixel reader does not trust the generator's values: it finds the series colour in the image, measures
each bar's height (or each marker's centre) in pixels, converts pixels to values with the fixed axes box
and the y range, and answers the question text from that reading alone.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from foveal.verifiers.datasets.charts import (
    AXES_BOX,
    CHART_KINDS,
    CHART_QUESTION_KINDS,
    ChartPlan,
    SERIES_COLORS,
    ChartExample,
    ChartsSpec,
    ChartsSpecError,
    generate_chart,
    iter_charts,
    plan_chart,
)


def values_from_pixels(chart: ChartExample, spec: ChartsSpec) -> list[int]:
    pixels = np.asarray(chart.image)
    height, width = pixels.shape[:2]
    mask = np.all(pixels == np.array(SERIES_COLORS[chart.color], dtype=np.uint8), axis=-1)
    left, bottom, right, top = AXES_BOX
    y_zero, y_top = height - bottom * height, height - top * height
    per_unit = (y_zero - y_top) / (spec.max_value + 1)
    n = len(chart.labels)
    centres = [left * width + (i + 0.6) / (n + 0.2) * (right - left) * width for i in range(n)]
    values = []
    for x in centres:
        rows = np.nonzero(mask[:, int(round(x))])[0]
        assert rows.size, f"no series pixels at x={x:.1f} in {chart.example_id}"
        if chart.kind == "bar":
            values.append(round(rows.size / per_unit))
        else:
            values.append(round((y_zero - rows.mean()) / per_unit))
    if chart.kind == "bar":  # exactly one run of bar columns per category, in order
        columns = mask.any(axis=0).astype(int)
        assert int(np.sum(np.diff(columns) == 1)) + columns[0] == n
    return values


def answer_from_values(question: str, labels: tuple[str, ...], values: list[int]) -> str:
    value_of = dict(zip(labels, values))
    if m := re.fullmatch(r"What is the value of (?:the line at )?(\w+)\?", question):
        return str(value_of[m[1]])
    if m := re.fullmatch(r"(?:Which is larger, (\w+) or (\w+)|Is the line higher at (\w+) or at (\w+))\?", question):
        a, b = [g for g in m.groups() if g]
        return a if value_of[a] > value_of[b] else b
    raise AssertionError(f"question the reader does not know: {question!r}")


def test_answers_agree_with_the_pixels() -> None:
    spec = ChartsSpec()
    for chart in iter_charts(24, seed=1, split="train", spec=spec):
        values = values_from_pixels(chart, spec)
        assert values == list(chart.values), chart.example_id
        assert answer_from_values(chart.question.text, chart.labels, values) == chart.question.answer


def test_pixels_agree_for_other_sizes_and_ranges() -> None:
    spec = ChartsSpec(width=320, height=240, max_value=15, max_points=8)
    for chart in iter_charts(6, seed=4, split="eval", spec=spec):
        assert values_from_pixels(chart, spec) == list(chart.values), chart.example_id


def test_same_seed_same_charts_and_splits_differ() -> None:
    first = [generate_chart(i, seed=3) for i in range(3)]
    again = [generate_chart(i, seed=3) for i in range(3)]
    assert all(a.image.tobytes() == b.image.tobytes() and a.question == b.question for a, b in zip(first, again))
    assert [plan_chart(i, seed=3) for i in range(3)] == [
        ChartPlan(**{k: v for k, v in vars(c).items() if k != "image"}) for c in first
    ]
    evals = [plan_chart(i, seed=3, split="eval") for i in range(6)]
    first = [plan_chart(i, seed=3) for i in range(6)]
    assert [(c.labels, c.values) for c in first] != [(c.labels, c.values) for c in evals]


def test_every_kind_of_chart_and_question_occurs() -> None:
    charts = [plan_chart(index) for index in range(60)]
    assert {c.kind for c in charts} == set(CHART_KINDS)
    assert {c.question.kind for c in charts} == set(CHART_QUESTION_KINDS)
    assert len({c.example_id for c in charts}) == 60


def test_impossible_specs_name_the_field() -> None:
    with pytest.raises(ChartsSpecError, match="width"):
        ChartsSpec(width=10)
    with pytest.raises(ChartsSpecError, match="min_points"):
        ChartsSpec(min_points=1)
    with pytest.raises(ChartsSpecError, match="max_value"):
        ChartsSpec(max_value=50)
    with pytest.raises(ChartsSpecError, match="split"):
        generate_chart(0, split="dev")  # type: ignore[arg-type]
