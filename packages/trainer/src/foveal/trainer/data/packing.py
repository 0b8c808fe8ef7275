"""Plan which samples share a packed micro-batch: best-fit decreasing into bins of at most `seq_len` tokens.

Pure Python (no torch), so the plan is tested with property tests and computed anywhere in the data path.
A plan is a list of bins, each a list of indices into the input, in input order within a bin. Equal inputs
always give equal plans: ties are broken by input index, never by hashing or timing.

Overlong samples (docs/contract.md section 8): a multimodal sample longer than `seq_len` is rejected with
`OverlongSample`, because cutting its tokens would cut image placeholders out of step with its pixels. A
text-only sample is rejected too unless `overlong_text="truncate"`, which keeps its first `seq_len` tokens
(`foveal.trainer.data.collate.fit_sample` cuts the token ids and every per-token field at that place).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from foveal.renderers.errors import ContractError, OverlongSample

OverlongText = Literal["error", "truncate"]
OVERLONG_TEXT_POLICIES: tuple[OverlongText, ...] = ("error", "truncate")


@dataclass(frozen=True)
class PackItem:
    """What the planner needs to know about one sample."""

    sample_id: str
    length: int
    multimodal: bool


def packed_length(item: PackItem, seq_len: int, overlong_text: OverlongText = "error") -> int:
    """The tokens `item` occupies in a bin: its length, or `seq_len` for a text sample the policy truncates."""
    _check_settings(seq_len, overlong_text)
    if item.length < 1:
        raise ContractError(f"sample {item.sample_id!r}.length", item.length, "at least 1 token")
    if item.length <= seq_len:
        return item.length
    if item.multimodal or overlong_text == "error":
        raise OverlongSample(sample_id=item.sample_id, length=item.length, limit=seq_len)
    return seq_len


def plan_micro_batches(
    items: Sequence[PackItem], seq_len: int, overlong_text: OverlongText = "error"
) -> list[list[int]]:
    """Bins of indices into `items`, each summing to at most `seq_len` packed tokens.

    Best-fit decreasing: longest first, each into the fullest bin that still has room. Sorting first lets the
    short samples fill the gaps the long ones leave; best fit (rather than first fit) keeps roomy bins open
    for the samples still to come. Bins are numbered in opening order.
    """
    _check_settings(seq_len, overlong_text)
    lengths = [packed_length(item, seq_len, overlong_text) for item in items]
    order = sorted(range(len(items)), key=lambda index: (-lengths[index], index))
    bins: list[list[int]] = []
    # (room left, bin number), kept sorted: the first entry with room >= length is the best fit.
    rooms: list[tuple[int, int]] = []
    for index in order:
        slot = bisect.bisect_left(rooms, (lengths[index], -1))
        if slot == len(rooms):
            bins.append([])
            room, number = seq_len, len(bins) - 1
        else:
            room, number = rooms.pop(slot)
        bins[number].append(index)
        bisect.insort(rooms, (room - lengths[index], number))
    return [sorted(members) for members in bins]


def _check_settings(seq_len: int, overlong_text: str) -> None:
    if seq_len < 1:
        raise ContractError("seq_len", seq_len, "a positive number of tokens")
    if overlong_text not in OVERLONG_TEXT_POLICIES:
        raise ContractError("overlong_text", overlong_text, f"one of {', '.join(OVERLONG_TEXT_POLICIES)}")
