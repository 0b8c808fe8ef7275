"""DFlash training blocks on a packed row: which target layers to read, anchors, block inputs, labels, masks.

Pure tensor functions (no model), so every rule is unit-tested on its own. A block starts at an anchor:
position 0 holds the real token at the anchor, positions 1..B-1 hold the mask embedding, and position k
predicts the token at anchor + k (same-position prediction; position 0 carries no loss). The block sees the
target's context features of its own sample strictly before the anchor (at decode time the anchor is the
token the target just emitted, whose hidden states do not exist yet) and every position of its own block
(bidirectional); blocks never see each other. Anchors are drawn at random where the token and the next one
lie in the sample's loss span (the assistant tokens), at most `per_sample` per sample.

Loss weights: position k >= 1 weighs exp(-(k - 1) / gamma) (earlier positions matter more: a rejection ends
the accepted run), times 0 where the label is outside the sample or its loss span, times the sample weight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.model.attention import boundary_row


@dataclass(frozen=True)
class Blocks:
    """N blocks of size B on one packed row of T tokens."""

    anchors: torch.Tensor
    """[N] int64: row index of each anchor, ascending."""
    context_starts: torch.Tensor
    """[N] int64: row index of the first token of the anchor's sample (its context is [start, anchor))."""
    anchor_tokens: torch.Tensor
    """[N] int64: the token at each anchor (block position 0)."""
    positions: torch.Tensor
    """[N, B] int64: rotary positions of the block (the anchor's position in its sample, plus k)."""
    labels: torch.Tensor
    """[N, B] int64: the token at anchor + k (0 where that is past the sample)."""
    weights: torch.Tensor
    """[N, B] float32: loss weight of each block position."""

    @property
    def count(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def weighted_count(self) -> int:
        """Blocks with a weighted position (not the weightless block of a row without anchors, or its padding)."""
        return int((self.weights > 0).any(dim=1).sum())

    def to(self, device: torch.device | str) -> Blocks:
        return Blocks(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))

    def chunk(self, start: int, stop: int) -> Blocks:
        """Blocks start..stop-1 (a draft forward takes a few hundred at a time)."""
        return Blocks(*(getattr(self, name)[start:stop] for name in self.__dataclass_fields__))

    def weightless(self) -> Blocks:
        """The same blocks with every weight 0: a forward that adds no loss (keeps ranks' collectives in step)."""
        return dataclasses.replace(self, weights=torch.zeros_like(self.weights))


def default_target_layer_ids(num_target_layers: int, num_draft_layers: int) -> tuple[int, ...]:
    """DFlash's choice: one target layer per draft layer, spread evenly from layer 1 to layer L - 3.

    One draft layer reads the middle layer. Targets too shallow for that span (L <= 4) spread over all
    layers instead; repeated ids collapse, so the draft may read fewer layers than it has.
    """
    if num_target_layers < 1 or num_draft_layers < 1:
        raise ContractError("num_target_layers/num_draft_layers", (num_target_layers, num_draft_layers), "both >= 1")
    if num_draft_layers == 1:
        return (num_target_layers // 2,)
    start, end = (1, num_target_layers - 3) if num_target_layers > 4 else (0, num_target_layers - 1)
    spread = (start + round(i * (end - start) / (num_draft_layers - 1)) for i in range(num_draft_layers))
    return tuple(sorted(set(spread)))


def loss_decay(block_size: int, gamma: float) -> torch.Tensor:
    """[B] weights of block positions: 0 for the anchor, exp(-(k - 1) / gamma) for k >= 1 (1 when gamma is 0)."""
    k = torch.arange(block_size, dtype=torch.float32)
    weights = torch.ones(block_size) if gamma == 0 else torch.exp(-(k - 1).clamp(min=0) / gamma)
    weights[0] = 0.0
    return weights


def span_mask(shifted_loss_weights: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[T] bool: token t is in its sample's loss span.

    Collated weights are shifted (value t is the weight of token t + 1 as a label), so token t's own weight
    sits at t - 1; a sample's first token is never a label.
    """
    weights = shifted_loss_weights.reshape(-1)
    own = torch.cat([weights.new_zeros(1), weights[:-1]]) > 0
    own[cu_seqlens[:-1].long()] = False
    return own


def segment_starts(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[T] int64: for every token, the row index of its sample's first token."""
    starts = cu_seqlens[:-1].long()
    return torch.repeat_interleave(starts, (cu_seqlens[1:] - cu_seqlens[:-1]).long())


def sample_anchors(
    in_span: torch.Tensor,
    cu_seqlens: torch.Tensor,
    sample_weights: torch.Tensor,
    per_sample: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """[N] ascending row indices: up to `per_sample` random anchors per sample of non-zero weight.

    An anchor and the token after it both lie in the loss span of the same sample, so every block has
    at least one label to learn.
    """
    anchors = []
    for index, (start, stop) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist(), strict=True)):
        if float(sample_weights[index]) <= 0 or stop - start < 2:
            continue
        candidates = start + torch.nonzero(in_span[start : stop - 1] & in_span[start + 1 : stop]).view(-1)
        order = torch.randperm(len(candidates), generator=generator)[:per_sample]
        anchors.append(candidates[order])
    if not anchors:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(anchors).sort().values


def build_blocks(
    input_ids: torch.Tensor,
    text_positions: torch.Tensor,
    in_span: torch.Tensor,
    cu_seqlens: torch.Tensor,
    sample_weights: torch.Tensor,
    anchors: torch.Tensor,
    block_size: int,
    gamma: float,
) -> Blocks:
    """The blocks at `anchors` of one packed row (`input_ids`/`text_positions`/`in_span` are `[T]`).

    A row without anchors (a weightless padding micro-batch, or only one-token answers) gets one block at
    row 0 with every weight 0, so each rank still runs the same draft forward/backward passes.
    """
    ids, positions = input_ids.reshape(-1), text_positions.reshape(-1)
    starts = segment_starts(cu_seqlens)
    sample_of = torch.repeat_interleave(
        torch.arange(len(cu_seqlens) - 1), (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    )
    weightless = anchors.numel() == 0
    anchors = torch.zeros(1, dtype=torch.long) if weightless else anchors.long()
    offsets = torch.arange(block_size)
    targets = anchors[:, None] + offsets  # [N, B] row index each position predicts
    stops = cu_seqlens[1:].long()[sample_of[anchors]]
    inside = targets < stops[:, None]
    safe = torch.where(inside, targets, anchors[:, None])
    weights = inside & in_span[safe]
    weights = weights.float() * loss_decay(block_size, gamma) * sample_weights.float()[sample_of[anchors]][:, None]
    if weightless:
        weights = torch.zeros_like(weights)
    return Blocks(
        anchors=anchors,
        context_starts=starts[anchors],
        anchor_tokens=ids[anchors],
        positions=positions[anchors][:, None] + offsets,
        labels=torch.where(inside, ids[safe], torch.zeros_like(safe)),
        weights=weights,
    )


def attention_mask(blocks: Blocks, context_start: int, context_len: int, block_size: int) -> torch.Tensor:
    """[N*B, C + N*B] bool: which keys each block query sees.

    Keys are the context rows `context_start .. context_start + C - 1` followed by the N blocks. A query of
    block j sees context rows in [context_starts[j], anchors[j]) and the B positions of block j.
    """
    device = blocks.anchors.device
    rows = context_start + torch.arange(context_len, device=device)
    seen = (rows[None, :] >= blocks.context_starts[:, None]) & (rows[None, :] < blocks.anchors[:, None])  # [N, C]
    own = torch.eye(blocks.count, dtype=torch.bool, device=device).repeat_interleave(block_size, dim=1)  # [N, N*B]
    per_block = torch.cat([seen, own], dim=1)
    return per_block.repeat_interleave(block_size, dim=0)


def context_window(blocks: Blocks) -> tuple[int, int]:
    """(first row, row count) of the context the blocks can see: from the earliest sample start to the last anchor."""
    first = int(blocks.context_starts.min())
    return first, max(int(blocks.anchors.max()) - first, 0)


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) pairs covering `count` items `size` at a time."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]



def text_positions(batch: PackedBatch) -> torch.Tensor:
    """[T] token positions within each sample (the draft's 1-D rotary positions, also for mrope targets)."""
    return boundary_row(batch.position_ids)[0]


def plan_blocks(
    batch: PackedBatch, block_size: int, per_sample: int, gamma: float, generator: torch.Generator
) -> Blocks:
    """Random anchors and their blocks for one packed micro-batch (on the batch's device, CPU in the loop)."""
    in_span = span_mask(batch.loss_weights, batch.cu_seqlens)
    anchors = sample_anchors(in_span, batch.cu_seqlens, batch.sample_weights, per_sample, generator)
    ids, positions, bounds = batch.input_ids, text_positions(batch), batch.cu_seqlens
    return build_blocks(ids, positions, in_span, bounds, batch.sample_weights, anchors, block_size, gamma)
