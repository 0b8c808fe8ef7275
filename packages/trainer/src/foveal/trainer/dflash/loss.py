"""The DFlash objective on one packed micro-batch: weighted cross-entropy of every block position's prediction.

The step loss is sum(weight * CE) / (sum of weights over the whole step, all micro-batches and ranks), so
micro-batches and ranks add up to the weighted mean DFlash minimises, whatever the packing. Logits are only
computed where a weight is non-zero (the anchor position and positions past the sample never are), which
keeps the `[positions, vocab]` tensor to the supervised positions, and `[trainer].loss_chunk_tokens` runs the
head over them a chunk at a time (never the whole `[positions, vocab]` fp32 logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from foveal.trainer.dflash.blocks import Blocks, attention_mask, chunks, context_window
from foveal.trainer.dflash.draft import DFlashDraft
from foveal.trainer.dflash.weights import TargetWeights
from foveal.trainer.training.chunked_ce import TokenScores, linear_token_scores


@dataclass(frozen=True)
class BlockLoss:
    """One micro-batch's share of the step loss (a graph to backward through) and its accuracy counts."""

    loss: torch.Tensor
    correct: int
    """Supervised positions whose argmax equals the label."""
    supervised: int
    """Positions with a non-zero weight."""


def head_scores(target: TargetWeights, hidden: torch.Tensor, labels: torch.Tensor, chunk_tokens: int) -> TokenScores:
    """Cross-entropy (fp32) and argmax of `hidden` `[N, H]` through the target's frozen head: `chunk_tokens`
    positions at a time (`foveal.trainer.training.chunked_ce`), or from the full `[N, vocab]` logits when 0."""
    if chunk_tokens:
        return linear_token_scores(hidden.to(target.lm_head.dtype), target.lm_head, None, labels, chunk_tokens)
    logits = target.logits(hidden)
    nll = F.cross_entropy(logits, labels, reduction="none")
    return TokenScores(nll, torch.zeros_like(nll), logits.argmax(-1))


def block_loss(
    draft: DFlashDraft,
    target: TargetWeights,
    features: torch.Tensor,
    text_positions: torch.Tensor,
    blocks: Blocks,
    total_weight: float,
    anchor_chunk: int,
    forwards: int = 0,
    loss_chunk_tokens: int = 0,
) -> BlockLoss:
    """The loss term of `blocks` over one row's context `features` `[T, n*H]`, `anchor_chunk` blocks per forward.

    Blocks never attend to each other, so chunking the draft forward changes nothing but the mask size.
    `forwards` pads the draft forwards to that count with weightless reruns of the first chunk: under FSDP2 every
    forward all-gathers the draft's shards, so every rank must run as many as the rank with the most chunks.
    `blocks` and the row tensors must be on the draft's device. `loss_chunk_tokens` chunks the head (`head_scores`).
    """
    size = blocks.positions.shape[1]
    loss = features.new_zeros((), dtype=torch.float32)
    correct = supervised = 0
    spans = chunks(blocks.count, anchor_chunk)
    for number, (start, stop) in enumerate(spans + spans[:1] * max(forwards - len(spans), 0)):
        part = blocks.chunk(start, stop)
        if number >= len(spans):
            part = part.weightless()
        first, length = context_window(part)
        mask = attention_mask(part, first, length, size).to(features.device)
        hidden = draft(
            features[first : first + length],
            text_positions[first : first + length],
            target.embed_tokens(part.anchor_tokens),
            part.positions,
            mask,
        )
        weights, labels = part.weights.reshape(-1), part.labels.reshape(-1)
        kept = torch.nonzero(weights > 0).view(-1)
        if kept.numel() == 0:  # a weightless block: keep it in the graph so every rank runs the same backward
            loss = loss + hidden.sum() * 0.0
            continue
        scores = head_scores(target, hidden[kept], labels[kept], loss_chunk_tokens)
        loss = loss + (scores.nll * weights[kept]).sum() / max(total_weight, 1e-12)
        correct += int((scores.predicted == labels[kept]).sum())
        supervised += int(kept.numel())
    return BlockLoss(loss, correct, supervised)
