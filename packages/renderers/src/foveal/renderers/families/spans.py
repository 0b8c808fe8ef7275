"""The placeholder check every rendered sequence passes before it leaves the renderer.

A span that is off by one token silently feeds the model the wrong image features (or crashes the
vision merge far away, in the trainer). So each span is checked where it is made: as long as the descriptor's
layout says, exactly one of the sequence's placeholder runs (`foveal.renderers.placeholders`), and framed by
the family's vision markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.placeholders import check_runs, payload_runs


class Span(Protocol):
    descriptor: RawImageDescriptor
    offset: int
    length: int


def check_spans(
    token_ids: Sequence[int],
    images: Sequence[Span],
    image_token_id: int | None,
    markers: tuple[int, int] | None = None,
) -> None:
    """Raise PlaceholderMismatch naming `images[i]` for the first span that disagrees with the tokens."""
    for index, image in enumerate(images):
        expected = image.descriptor.payload.get("num_placeholder_tokens")
        if image.length != expected:
            raise PlaceholderMismatch(f"images[{index}].length", image.length, f"{expected} (the descriptor's layout)")
    runs = [payload_runs(image.descriptor.payload) for image in images]
    check_runs(token_ids, image_token_id, [(image.offset, image.length) for image in images], runs_per_image=runs)
    if markers is not None:
        for index, image in enumerate(images):
            _check_markers(token_ids, image, markers, f"images[{index}]")


def _check_markers(token_ids: Sequence[int], image: Span, markers: tuple[int, int], field: str) -> None:
    start, end = markers
    before = image.offset - 1
    after = image.offset + image.length
    if before < 0 or token_ids[before] != start or after >= len(token_ids) or token_ids[after] != end:
        raise PlaceholderMismatch(f"{field}.offset", image.offset, "a span framed by the vision start/end tokens")
