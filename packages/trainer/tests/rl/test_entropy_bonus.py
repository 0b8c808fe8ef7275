"""The RL entropy bonus (`trainer.loss.entropy_coef`): its value, its direction, and that it needs the entropy."""

from __future__ import annotations

import pytest
import torch

from foveal.configs.trainer import RL_LOSS_KINDS, LossConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.rl.loss import rl_loss
from foveal.trainer.training.loss import packed_token_weights

VOCAB = 5


def batch(advantage: float = 0.0):
    """Two samples: a 2-token prompt, then 3 completion tokens of fractional weight."""
    samples = [
        PackSample(f"s{i}", [1, 2, 3, 4, 0], [0.0, 0.0, 0.5, 1.0, 1.5], logprobs=[-1.0] * 5,
                   advantages=[0.0, 0.0, advantage, advantage, advantage])
        for i in range(2)
    ]  # fmt: skip
    return collate_packed(samples, TextPositions())


def logits_for(packed, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, packed.num_tokens, VOCAB, generator=generator, dtype=torch.float64).requires_grad_(True)


@pytest.mark.parametrize("kind", RL_LOSS_KINDS)
def test_the_bonus_subtracts_the_weighted_entropy_of_counted_tokens(kind: str) -> None:
    packed = batch(advantage=0.7)
    logits = logits_for(packed)
    plain = rl_loss(logits, packed, 9, LossConfig(kind=kind)).loss
    bonus = rl_loss(logits, packed, 9, LossConfig(kind=kind, entropy_coef=0.1)).loss
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    weights = packed_token_weights(packed).to(entropy.dtype)
    torch.testing.assert_close(bonus, (plain - 0.1 * (entropy * weights).sum() / 9).float())


@pytest.mark.parametrize("kind", RL_LOSS_KINDS)
def test_with_zero_advantages_a_step_on_the_bonus_raises_the_entropy(kind: str) -> None:
    packed = batch(advantage=0.0)
    logits = logits_for(packed, seed=3)
    counted = packed_token_weights(packed) > 0
    before = torch.distributions.Categorical(logits=logits).entropy()[counted].sum()
    rl_loss(logits, packed, 6, LossConfig(kind=kind, entropy_coef=0.5)).loss.backward()
    with torch.no_grad():
        after = torch.distributions.Categorical(logits=logits - 0.5 * logits.grad).entropy()[counted].sum()
    assert after > before


def test_the_bonus_without_an_entropy_is_refused_naming_it() -> None:
    from foveal.trainer.rl.loss import rl_nll_loss
    from foveal.trainer.training.loss import token_nll

    packed = batch()
    nll = token_nll(logits_for(packed), packed.labels)
    with pytest.raises(ContractError, match="entropy: the entropy per position when trainer.loss.entropy_coef > 0"):
        rl_nll_loss(nll, packed, 6, LossConfig(kind="importance_sampling", entropy_coef=0.1))


@pytest.mark.parametrize("chunk_tokens", [0, 4], ids=["full-logits", "chunked-head"])
def test_the_trainers_token_scores_carry_the_entropy_gradient_on_both_head_paths(
    chunk_tokens: int, load_tiny_model
) -> None:
    from foveal.trainer.data.positions import position_scheme
    from foveal.trainer.training.chunked_ce import packed_token_scores

    model = load_tiny_model("qwen3")
    samples = [PackSample("s", [11, 12, 13, 14, 15], [0.0, 0.0, 1.0, 1.0, 1.0], logprobs=[0.0] * 5,
                          advantages=[0.0] * 5)]  # fmt: skip
    row = collate_packed(samples, position_scheme(model))
    scores = packed_token_scores(model, row, chunk_tokens, entropy_gradient=True)
    scores.entropy.sum().backward()
    head = model.get_output_embeddings().weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    if chunk_tokens == 0:  # the plain path keeps the entropy's graph only when asked
        assert not packed_token_scores(model, row, chunk_tokens).entropy.requires_grad
