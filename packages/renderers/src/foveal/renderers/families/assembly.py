"""Pieces -> token ids, loss mask and image spans, in one pass.

Consecutive text pieces are joined and encoded as one stretch (cuts only next to added tokens, so the
ids equal the template string's). A token is trained when its last character comes from a trained piece:
where BPE merges a header's `\\n` with the first characters of assistant content, the merged token carries
assistant text and is trained. Image slots expand to `lengths[i]` copies of the image token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.families.encoding import SegmentEncoder
from foveal.renderers.families.pieces import Piece, Text, Token


@dataclass(frozen=True, slots=True)
class Assembled:
    """Token ids, a 0/1 loss mask of the same length, and `(offset, length)` of each image's placeholders."""

    token_ids: list[int]
    loss_mask: list[int]
    spans: list[tuple[int, int]]


class _Builder:
    """Accumulates ids and mask; text waits in `pending` until an added token or image cuts it."""

    def __init__(self, encoder: SegmentEncoder, image_token_id: int, reserved: frozenset[int]) -> None:
        self.encoder = encoder
        self.image_token_id = image_token_id
        self.reserved = reserved
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.spans: list[tuple[int, int]] = []
        self.pending: list[tuple[str, bool]] = []

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(chunk for chunk, _ in self.pending)
        ids, ends = self.encoder.encode(text)
        if self.reserved.intersection(ids):
            raise PlaceholderMismatch("text", text, "no image placeholder tokens inside message text")
        self.ids.extend(ids)
        self.mask.extend(_trained_by_end(self.pending, ends))
        self.pending = []

    def add_token(self, token_id: int, trained: bool) -> None:
        self.flush()
        self.ids.append(token_id)
        self.mask.append(int(trained))

    def add_image(self, length: int) -> None:
        self.flush()
        self.spans.append((len(self.ids), length))
        self.ids.extend([self.image_token_id] * length)
        self.mask.extend([0] * length)


def _trained_by_end(runs: Sequence[tuple[str, bool]], ends: Sequence[int]) -> list[int]:
    """For each token (by end offset), 1 if the character before its end lies in a trained run."""
    bounds, position = [], 0
    for chunk, trained in runs:
        position += len(chunk)
        bounds.append((position, int(trained)))
    mask, run = [], 0
    for end in ends:
        while bounds[run][0] < end:
            run += 1
        mask.append(bounds[run][1])
    return mask


def assemble(
    pieces: Sequence[Piece],
    encoder: SegmentEncoder,
    image_lengths: Sequence[int],
    image_token_id: int,
    trained: Callable[[Text | Token], bool],
    reserved: frozenset[int] = frozenset(),
) -> Assembled:
    """Encode `pieces`; `trained(piece)` decides the mask, `reserved` ids may not appear inside text."""
    builder = _Builder(encoder, image_token_id, reserved | {image_token_id})
    for piece in pieces:
        if isinstance(piece, Text):
            if piece.text:
                builder.pending.append((piece.text, trained(piece)))
        elif isinstance(piece, Token):
            builder.add_token(encoder.token_id(piece.token), trained(piece))
        else:
            builder.add_image(image_lengths[piece.image])
    builder.flush()
    return Assembled(builder.ids, builder.mask, builder.spans)
