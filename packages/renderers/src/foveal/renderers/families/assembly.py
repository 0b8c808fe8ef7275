"""Pieces -> token ids, loss mask and image spans, in one pass.

Consecutive text pieces are joined and encoded as one stretch (cuts only next to added tokens, so the
ids equal the template string's). A token is trained when its last character comes from a trained piece:
where BPE merges a header's `\\n` with the first characters of assistant content, the merged token carries
assistant text and is trained. Image slots expand to `lengths[i]` copies of the image token; an image written as
several `ImageRun`s (SmolVLM's tiles) gets one span from its first run over all its placeholders. Each token is
attributed to a message by the same rule: the message whose piece holds the token's last character; and it is
content (see `RenderedConversation.content_mask`) when that piece is a content piece. Placeholders are content.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from foveal.renderers.errors import PlaceholderMismatch
from foveal.renderers.families.encoding import SegmentEncoder
from foveal.renderers.families.pieces import ImageRun, Piece, Text, Token


@dataclass(frozen=True, slots=True)
class Assembled:
    """Token ids, a 0/1 loss mask, the message index and 0/1 content bit of each token, and each image's
    `(offset, length)`."""

    token_ids: list[int]
    loss_mask: list[int]
    spans: list[tuple[int, int]]
    messages: list[int]
    content: list[int]


class _Builder:
    """Accumulates ids and mask; text waits in `pending` until an added token or image cuts it."""

    def __init__(self, encoder: SegmentEncoder, image_token_id: int, reserved: frozenset[int]) -> None:
        self.encoder = encoder
        self.image_token_id = image_token_id
        self.reserved = reserved
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.spans: list[tuple[int, int]] = []
        self.messages: list[int] = []
        self.content: list[int] = []
        self.pending: list[Text] = []
        self.span_images: list[int] = []

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(piece.text for piece in self.pending)
        ids, ends = self.encoder.encode(text)
        if self.reserved.intersection(ids):
            raise PlaceholderMismatch("text", text, "no image placeholder tokens inside message text")
        self.ids.extend(ids)
        owners = _piece_by_end(self.pending, ends)
        self.mask.extend(int(piece.trained) for piece in owners)
        self.messages.extend(piece.message for piece in owners)
        self.content.extend(int(piece.content) for piece in owners)
        self.pending = []

    def add_token(self, token_id: int, trained: bool, message: int, content: bool) -> None:
        self.flush()
        self.ids.append(token_id)
        self.mask.append(int(trained))
        self.messages.append(message)
        self.content.append(int(content))

    def add_image(self, length: int, message: int, image: int) -> None:
        self.flush()
        if self.span_images and self.span_images[-1] == image:  # a further run of the same image's block
            start, count = self.spans[-1]
            self.spans[-1] = (start, count + length)
        else:
            self.spans.append((len(self.ids), length))
            self.span_images.append(image)
        self.ids.extend([self.image_token_id] * length)
        self.mask.extend([0] * length)
        self.messages.extend([message] * length)
        self.content.extend([1] * length)


def _piece_by_end(runs: Sequence[Text], ends: Sequence[int]) -> list[Text]:
    """For each token (by end offset), the text piece that holds the character before its end."""
    bounds, position = [], 0
    for piece in runs:
        position += len(piece.text)
        bounds.append(position)
    owners, run = [], 0
    for end in ends:
        while bounds[run] < end:
            run += 1
        owners.append(runs[run])
    return owners


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
                builder.pending.append(Text(piece.text, piece.message, trained(piece), content=piece.content))
        elif isinstance(piece, Token):
            builder.add_token(encoder.token_id(piece.token), trained(piece), piece.message, piece.content)
        elif isinstance(piece, ImageRun):
            builder.add_image(piece.length, piece.message, piece.image)
        else:
            builder.add_image(image_lengths[piece.image], piece.message, piece.image)
    builder.flush()
    return Assembled(builder.ids, builder.mask, builder.spans, builder.messages, builder.content)
