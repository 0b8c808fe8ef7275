"""Image placeholder runs: which tokens of a sequence are which image's, decided once for every reader.

An image's features replace a run of its family's placeholder token, and a run off by one token feeds the
model the wrong features (or crashes the vision merge far from the sample that caused it). So the renderer,
the trainer and both servers pair images with runs here, one way: a run is a maximal stretch of the
placeholder token (two touching images would read as one, which is why families frame each image with
vision markers), image i owns run i, and it needs exactly the placeholder count its layout gives.
A family whose block splits an image's placeholders into several runs (SmolVLM: one run per tile, the tiles'
own tokens between them) says so in its payload (`placeholder_runs`): image i then owns that many consecutive
runs of equal length, and its span is (start of its first run, its whole placeholder count).
Callers name the fields their errors blame (`RunFields`), so each reports in its own terms.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from foveal.renderers.errors import PlaceholderMismatch

Span = tuple[int, int]
"""(offset, length) of one run of placeholder tokens."""


@dataclass(frozen=True)
class RunFields:
    """The fields errors name: image i without a run, image i's disagreeing run, a placeholder outside all runs."""

    image: Callable[[int], str] = "images[{}]".format
    run: Callable[[int], str] = "images[{}].span".format
    tokens: str = "token_ids"


def placeholder_runs(token_ids: Sequence[int], image_token_id: int | None) -> list[Span]:
    """Every maximal run of `image_token_id` in order; none when it is None (a model without images)."""
    runs, offset = [], 0
    for token, group in itertools.groupby(token_ids):
        length = sum(1 for _ in group)
        if token == image_token_id:
            runs.append((offset, length))
        offset += length
    return runs


def pair_images(
    token_ids: Sequence[int],
    image_token_id: int | None,
    counts: Sequence[int],
    fields: RunFields = RunFields(),
    runs_per_image: Sequence[int] | None = None,
) -> list[Span]:
    """Run i for image i, once each run is exactly `counts[i]` long and no placeholder is left over.

    With `runs_per_image`, image i owns `runs_per_image[i]` consecutive runs of `counts[i] / runs_per_image[i]`
    each (see `payload_runs`), and its span starts at the first of them.
    Raises PlaceholderMismatch naming `fields.image(i)` when image i has no run, `fields.run(i)` when its
    run is shorter, and `fields.tokens` for a placeholder outside every image's run (a run too long, or
    more runs than images).
    """
    runs = placeholder_runs(token_ids, image_token_id)
    per_image = [1] * len(counts) if runs_per_image is None else list(runs_per_image)
    spans: list[Span] = []
    position = 0
    for index, (count, pieces) in enumerate(zip(counts, per_image, strict=True)):
        pieces = pieces if pieces > 0 and count % pieces == 0 else 1  # a payload's grid check refuses the rest
        size = count // pieces
        for _ in range(pieces):
            if position == len(runs):
                expected = f"a run of image placeholder tokens ({image_token_id}) in {fields.tokens} for every image"
                raise PlaceholderMismatch(fields.image(index), f"image {index} of {len(counts)}", expected)
            start, length = runs[position]
            if length < size:
                expected = (
                    f"{size} placeholder tokens from {fields.tokens}[{start}] (the image's layout); found {length}"
                )
                raise PlaceholderMismatch(fields.run(index), count, expected)
            if length > size:
                _stray(start + size, fields)
            if len(spans) == index:
                spans.append((start, count))
            position += 1
    if len(runs) > position:
        _stray(runs[position][0], fields)
    return spans


def payload_runs(payload: Mapping[str, Any]) -> int:
    """How many runs an image's placeholders form, from its descriptor payload (1 unless `placeholder_runs`)."""
    runs = payload.get("placeholder_runs", 1)
    return runs if isinstance(runs, int) and not isinstance(runs, bool) and runs > 0 else 1


def check_runs(
    token_ids: Sequence[int],
    image_token_id: int | None,
    spans: Sequence[Span],
    fields: RunFields = RunFields(),
    runs_per_image: Sequence[int] | None = None,
) -> None:
    """Recorded spans must be exactly the runs `pair_images` finds; `fields.run(i)` names the first that is not."""
    found = pair_images(token_ids, image_token_id, [length for _, length in spans], fields, runs_per_image)
    for index, (span, run) in enumerate(zip(spans, found, strict=True)):
        if span != run:
            raise PlaceholderMismatch(fields.run(index), span, f"the run of image placeholders at {run}")


def _stray(position: int, fields: RunFields) -> NoReturn:
    expected = "no image placeholder tokens outside the images' runs"
    raise PlaceholderMismatch(fields.tokens, f"placeholder at {position}", expected)
