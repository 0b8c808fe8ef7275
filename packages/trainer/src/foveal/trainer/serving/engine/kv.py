"""Batch-level operations on transformers' DynamicCache: join left-padded rows, keep some, repeat one.

The running batch is one cache of shape `[B, heads, T, head_dim]` per layer plus a `[B, T]` attention
mask (1 = real token, 0 = left padding). Sequences of different lengths share it by left padding: each
decode step appends one column for every row, so the padding stays on the left and the mask hides it.
Only full-attention layers (`DynamicLayer`) can be padded like this; a sliding-window cache cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer


class UnsupportedCache(TypeError):
    """A cache layer other than plain full attention (sliding window, linear attention, quantized)."""


@dataclass
class PaddedCache:
    """A cache and its `[B, T]` mask; row i of both belongs to the same sequence."""

    cache: DynamicCache
    mask: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])


def layer_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer, refusing layer kinds that left padding would corrupt."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise UnsupportedCache(f"cache layer {type(layer).__name__}: only full-attention layers can be batched")
    return [(layer.keys, layer.values) for layer in cache.layers]


def from_tensors(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    return DynamicCache(ddp_cache_data=[(keys, values) for keys, values in layers])


def join(parts: Sequence[PaddedCache]) -> PaddedCache:
    """Stack the rows of several caches, left-padding each to the longest."""
    length = max(part.length for part in parts)
    per_part = [layer_tensors(part.cache) for part in parts]
    layers = []
    for index in range(len(per_part[0])):
        keys = torch.cat([_left_pad(tensors[index][0], length) for tensors in per_part])
        values = torch.cat([_left_pad(tensors[index][1], length) for tensors in per_part])
        layers.append((keys, values))
    mask = torch.cat([F.pad(part.mask, (length - part.length, 0)) for part in parts])
    return PaddedCache(from_tensors(layers), mask)


def keep_rows(padded: PaddedCache, rows: torch.Tensor) -> PaddedCache:
    """Only `rows` (int64 indices), with the leading columns that are padding in every kept row dropped."""
    mask = padded.mask[rows]
    real = mask.any(dim=0).nonzero()
    start = int(real[0]) if len(real) else mask.shape[1]
    layers = [(k[rows, :, start:], v[rows, :, start:]) for k, v in layer_tensors(padded.cache)]
    return PaddedCache(from_tensors(layers), mask[:, start:])


def repeat_rows(padded: PaddedCache, times: int) -> PaddedCache:
    """Each row `times` times in a row (one prefilled prompt shared by n completions)."""
    layers = [(k.repeat_interleave(times, 0), v.repeat_interleave(times, 0)) for k, v in layer_tensors(padded.cache)]
    return PaddedCache(from_tensors(layers), padded.mask.repeat_interleave(times, 0))


def clone(padded: PaddedCache) -> PaddedCache:
    """An independent copy (the prompt cache keeps one while the batch grows its own)."""
    layers = [(k.clone(), v.clone()) for k, v in layer_tensors(padded.cache)]
    return PaddedCache(from_tensors(layers), padded.mask.clone())


def nbytes(padded: PaddedCache) -> int:
    return sum(k.nbytes + v.nbytes for k, v in layer_tensors(padded.cache))


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """`[B, H, T, D]` -> `[B, H, length, D]` with zeros before the existing columns."""
    return F.pad(tensor, (0, 0, length - tensor.shape[2], 0))
