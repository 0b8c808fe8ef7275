"""The placeholder check every rendered sequence passes before it leaves the renderer.

A span that is off by one token silently feeds the model the wrong image features (or crashes the
vision merge far away, in the trainer). So each span is checked where it is made: in bounds, in order,
exactly the image token, as long as the descriptor's layout says, framed by the family's vision markers,
and no image token anywhere else in the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import PlaceholderMismatch


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
    end_of_previous = 0
    for index, image in enumerate(images):
        field = f"images[{index}]"
        expected = image.descriptor.payload.get("num_placeholder_tokens")
        if image.length != expected:
            raise PlaceholderMismatch(f"{field}.length", image.length, f"{expected} (the descriptor's layout)")
        if image.offset < end_of_previous or image.offset + image.length > len(token_ids):
            raise PlaceholderMismatch(f"{field}.offset", image.offset, "in bounds and after the previous span")
        run = token_ids[image.offset : image.offset + image.length]
        if run.count(image_token_id) != image.length:
            raise PlaceholderMismatch(f"{field}.span", (image.offset, image.length), "only image placeholder tokens")
        if markers is not None:
            _check_markers(token_ids, image, markers, field)
        end_of_previous = image.offset + image.length
    total = sum(image.length for image in images)
    found = token_ids.count(image_token_id) if image_token_id is not None else 0
    if found != total:
        raise PlaceholderMismatch("token_ids", found, f"{total} image placeholder tokens, all inside image spans")


def _check_markers(token_ids: Sequence[int], image: Span, markers: tuple[int, int], field: str) -> None:
    start, end = markers
    before = image.offset - 1
    after = image.offset + image.length
    if before < 0 or token_ids[before] != start or after >= len(token_ids) or token_ids[after] != end:
        raise PlaceholderMismatch(f"{field}.offset", image.offset, "a span framed by the vision start/end tokens")
