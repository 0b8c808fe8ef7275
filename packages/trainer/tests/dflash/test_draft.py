"""The draft model: what a block may see, chunked forwards, and a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.dflash.blocks import attention_mask, plan_blocks, text_positions
from foveal.trainer.dflash.draft import DFlashDraft, DraftSpec
from foveal.trainer.dflash.loss import block_loss
from foveal.trainer.dflash.weights import TargetWeights

HIDDEN, VOCAB, LAYERS = 32, 50, (0, 2)


def spec(block_size: int = 4) -> DraftSpec:
    return DraftSpec(
        hidden_size=HIDDEN, num_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=64, rope_theta=10000.0, rms_norm_eps=1e-6, block_size=block_size,
        target_layer_ids=LAYERS, embed_weight="model.embed_tokens.weight", lm_head_weight="lm_head.weight",
    )  # fmt: skip


@pytest.fixture
def parts() -> tuple[DFlashDraft, TargetWeights]:
    torch.manual_seed(0)
    weights = TargetWeights(torch.randn(VOCAB, HIDDEN), torch.randn(VOCAB, HIDDEN), VOCAB, HIDDEN, 0, 4)
    return DFlashDraft(spec(), mask_embedding=weights.embed.mean(0)), weights


def row() -> object:
    samples = [PackSample(f"s{i}", list(range(1 + i, 13 + i)), [0.0] * 4 + [1.0] * 8) for i in range(3)]
    return collate_packed(samples, TextPositions())


def test_a_block_ignores_features_from_its_anchor_on_and_every_other_block(
    parts: tuple[DFlashDraft, TargetWeights],
) -> None:
    draft, weights = parts
    batch = row()
    blocks = plan_blocks(batch, 4, 2, 0.0, torch.Generator().manual_seed(1))
    features = torch.randn(batch.num_tokens, len(LAYERS) * HIDDEN)
    positions = text_positions(batch)

    def hidden(feats: torch.Tensor, anchor_tokens: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(blocks, 0, batch.num_tokens, 4)
        out = draft(feats, positions, weights.embed_tokens(anchor_tokens), blocks.positions, mask)
        return out.view(blocks.count, 4, HIDDEN)

    before = hidden(features, blocks.anchor_tokens)
    first = int(blocks.anchors[0])
    changed = features.clone()
    changed[first:] += 5.0  # the first block's anchor and everything after it
    other_tokens = blocks.anchor_tokens.clone()
    other_tokens[1:] = (other_tokens[1:] + 7) % VOCAB  # every other block's anchor token
    after = hidden(changed, other_tokens)
    assert torch.allclose(before[0], after[0], atol=1e-5)
    assert not torch.allclose(before[1:], after[1:], atol=1e-3)


def test_chunked_draft_forwards_give_the_same_loss_and_gradients(parts: tuple[DFlashDraft, TargetWeights]) -> None:
    draft, weights = parts
    batch = row()
    blocks = plan_blocks(batch, 4, 3, 2.0, torch.Generator().manual_seed(2))
    features = torch.randn(batch.num_tokens, len(LAYERS) * HIDDEN)
    total = float(blocks.weights.sum())
    results = []
    for chunk in (blocks.count, 2):
        draft.zero_grad()
        term = block_loss(draft, weights, features, text_positions(batch), blocks, total, chunk)
        term.loss.backward()
        results.append((term.loss.item(), term.supervised, draft.fc.weight.grad.clone()))
    (loss_a, n_a, grad_a), (loss_b, n_b, grad_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and n_a == n_b == int((blocks.weights > 0).sum())
    assert torch.allclose(grad_a, grad_b, atol=1e-6)


def test_a_saved_draft_loads_back_with_its_spec_and_weights(
    parts: tuple[DFlashDraft, TargetWeights], tmp_path: Path
) -> None:
    draft, _ = parts
    draft.save_pretrained(tmp_path / "draft")
    loaded = DFlashDraft.from_pretrained(tmp_path / "draft")
    assert loaded.spec == draft.spec
    assert all(torch.equal(a, b) for a, b in zip(draft.state_dict().values(), loaded.state_dict().values()))


def test_chunked_head_gives_the_plain_heads_loss_accuracy_and_gradients(
    parts: tuple[DFlashDraft, TargetWeights],
) -> None:
    draft, weights = parts
    batch = row()
    blocks = plan_blocks(batch, 4, 3, 2.0, torch.Generator().manual_seed(3))
    features = torch.randn(batch.num_tokens, len(LAYERS) * HIDDEN)
    total = float(blocks.weights.sum())
    results = []
    for loss_chunk in (0, 3):
        draft.zero_grad()
        positions = text_positions(batch)
        term = block_loss(draft, weights, features, positions, blocks, total, 2, loss_chunk_tokens=loss_chunk)
        term.loss.backward()
        results.append((term.loss.item(), term.correct, draft.fc.weight.grad.clone()))
    (loss_a, correct_a, grad_a), (loss_b, correct_b, grad_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and correct_a == correct_b
    torch.testing.assert_close(grad_a, grad_b, atol=1e-6, rtol=1e-5)
