"""DFlash blocks as pure functions: target layer choice, spans, anchors, labels, weights and the attention mask."""

from __future__ import annotations

import math

import pytest
import torch

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.dflash.blocks import (
    attention_mask,
    build_blocks,
    default_target_layer_ids,
    loss_decay,
    plan_blocks,
    sample_anchors,
    span_mask,
)


def packed(*samples: tuple[list[int], list[float], float]) -> object:
    """A collated text row of (tokens, per-token loss weights, sample weight) samples."""
    items = [PackSample(f"s{i}", ids, w, sample_weight=sw) for i, (ids, w, sw) in enumerate(samples)]
    return collate_packed(items, TextPositions())


def test_default_layers_spread_from_layer_one_to_three_below_the_top_as_dflash() -> None:
    assert default_target_layer_ids(36, 5) == (1, 9, 17, 25, 33)
    assert default_target_layer_ids(28, 1) == (14,)
    assert default_target_layer_ids(2, 2) == (0, 1)  # too shallow for 1..L-3: all layers
    assert default_target_layer_ids(2, 4) == (0, 1)  # repeated ids collapse
    with pytest.raises(ContractError, match="num_target_layers"):
        default_target_layer_ids(0, 1)


def test_loss_decay_skips_the_anchor_and_falls_exponentially() -> None:
    weights = loss_decay(5, gamma=2.0)
    assert weights[0] == 0.0 and weights[1] == 1.0
    assert weights[4].item() == pytest.approx(math.exp(-1.5))
    assert loss_decay(3, 0.0).tolist() == [0.0, 1.0, 1.0]


def test_span_mask_unshifts_collated_weights_per_sample() -> None:
    batch = packed(([1, 2, 3, 4], [0, 0, 1, 1], 1.0), ([5, 6, 7], [1, 1, 1], 1.0))
    in_span = span_mask(batch.loss_weights, batch.cu_seqlens)
    # sample 2's first token never is a label, whatever its weight says
    assert in_span.tolist() == [False, False, True, True, False, True, True]


def test_anchors_lie_in_the_span_with_a_labelled_successor_and_respect_the_per_sample_cap() -> None:
    batch = packed(([1] * 10, [0] * 4 + [1] * 6, 1.0), ([2] * 6, [0, 0, 0, 0, 1, 1], 1.0), ([3] * 8, [1] * 8, 0.0))
    in_span = span_mask(batch.loss_weights, batch.cu_seqlens)
    anchors = sample_anchors(in_span, batch.cu_seqlens, batch.sample_weights, 3, torch.Generator().manual_seed(0))
    first, second = anchors[anchors < 10], anchors[(anchors >= 10) & (anchors < 16)]
    assert len(first) == 3 and set(first.tolist()) <= {4, 5, 6, 7, 8}
    assert second.tolist() == [14]  # token 15 is the last in span; 14 is the only anchor with a labelled next
    assert not bool((anchors >= 16).any())  # a weightless sample gets none
    assert anchors.tolist() == sorted(anchors.tolist())
    again = sample_anchors(in_span, batch.cu_seqlens, batch.sample_weights, 3, torch.Generator().manual_seed(0))
    assert torch.equal(anchors, again)


def test_blocks_predict_the_tokens_after_the_anchor_within_their_sample() -> None:
    batch = packed(([10, 11, 12, 13, 14], [0, 1, 1, 1, 1], 1.0), ([20, 21, 22], [0, 1, 1], 0.5))
    in_span = span_mask(batch.loss_weights, batch.cu_seqlens)
    anchors = torch.tensor([2, 6])
    blocks = build_blocks(
        batch.input_ids, batch.position_ids[0], in_span, batch.cu_seqlens, batch.sample_weights, anchors, 4, 0.0
    )
    assert blocks.anchor_tokens.tolist() == [12, 21]
    assert blocks.context_starts.tolist() == [0, 5]
    assert blocks.positions.tolist() == [[2, 3, 4, 5], [1, 2, 3, 4]]
    assert blocks.labels.tolist() == [[12, 13, 14, 0], [21, 22, 0, 0]]
    assert blocks.weights.tolist() == [[0.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.0]]


def test_a_row_without_anchors_gets_one_weightless_block() -> None:
    batch = packed(([1, 2, 3], [1, 1, 1], 0.0))
    blocks = plan_blocks(batch, 4, 8, 7.0, torch.Generator().manual_seed(0))
    assert blocks.count == 1 and float(blocks.weights.sum()) == 0.0


def test_mask_shows_each_block_its_own_sample_before_the_anchor_and_itself_only() -> None:
    batch = packed(([1] * 6, [1] * 6, 1.0), ([2] * 5, [1] * 5, 1.0))
    in_span = span_mask(batch.loss_weights, batch.cu_seqlens)
    anchors = torch.tensor([3, 8])
    blocks = build_blocks(
        batch.input_ids, batch.position_ids[0], in_span, batch.cu_seqlens, batch.sample_weights, anchors, 2, 0.0
    )
    mask = attention_mask(blocks, 0, 11, 2)
    assert mask.shape == (4, 11 + 4)
    context, own = mask[:, :11], mask[:, 11:]
    assert context[0].nonzero().view(-1).tolist() == [0, 1, 2]  # strictly before anchor 3, not the anchor itself
    assert context[2].nonzero().view(-1).tolist() == [6, 7]  # sample 2 starts at row 6; nothing of sample 1
    assert torch.equal(context[0], context[1]) and torch.equal(context[2], context[3])
    assert own.tolist() == [[True, True, False, False]] * 2 + [[False, False, True, True]] * 2
    window = attention_mask(blocks, 6, 2, 2)  # the same, cut to the context rows 6..7
    assert window[2:, :2].all() and not window[:2, :2].any()
