"""One RL step moves the policy the right way: towards the answer with positive advantage, away from the other.

The reference tests in test_loss.py pin the loss against formulas; this one pins what the formulas are for, on a
real model through the trainer's own pieces (packed row, token scores, RL loss, AdamW), so a flipped sign
anywhere between the advantages and the optimizer fails it whatever the formulas say.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import PreTrainedModel

from foveal.configs.trainer import RL_LOSS_KINDS, LossConfig, OptimConfig
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.rl.loss import rl_nll_loss
from foveal.trainer.training.chunked_ce import packed_token_scores
from foveal.trainer.training.loss import local_loss_tokens, packed_token_weights, token_nll
from foveal.trainer.training.optim import build_optimizer

PROMPT = [11, 12, 13, 14, 15, 16]
ANSWERS = {"good": ([101, 102, 103, 104], 1.0), "bad": ([201, 202, 203, 204], -1.0)}  # tokens, advantage
SERVER_OFFSET = 0.05  # inside every kind's clip range and under the importance cap


def two_answers_row(model: torch.nn.Module) -> PackedBatch:
    """One prompt with two sampled answers packed in one row, prompt tokens weight 0, each answer's advantage
    on its tokens, and the server's logprobs: the model's own, off by +-SERVER_OFFSET (a slightly stale sampler,
    so importance ratios are not exactly 1)."""
    samples = []
    for name, (answer, advantage) in ANSWERS.items():
        ids = PROMPT + answer
        samples.append(PackSample(name, ids, [0.0] * len(PROMPT) + [1.0] * len(answer), logprobs=[0.0] * len(ids),
                                  advantages=[0.0] * len(PROMPT) + [advantage] * len(answer)))  # fmt: skip
    row = collate_packed(samples, position_scheme(model))
    offsets = SERVER_OFFSET * (1 - 2 * (torch.arange(row.num_tokens) % 2))
    server = answer_token_logprobs(model, row) + offsets
    return PackedBatch(**{**row.__dict__, "logprobs": server.detach()})


def answer_token_logprobs(model: torch.nn.Module, row: PackedBatch) -> torch.Tensor:
    """`[1, T]` log-probability of each label under the model, from its full logits (no grad)."""
    with torch.no_grad():
        return -token_nll(packed_logits(model, row), row.labels)


def answer_logprobs(model: torch.nn.Module, row: PackedBatch) -> dict[str, float]:
    """Each sample's answer log-probability: the sum over its counted tokens."""
    weighted = (answer_token_logprobs(model, row) * (packed_token_weights(row) > 0))[0]
    bounds = row.cu_seqlens.tolist()
    return {name: float(weighted[a:b].sum()) for name, a, b in zip(row.sample_ids, bounds[:-1], bounds[1:])}


# tied embeddings; untied with llama3 rope scaling; gpt_oss: experts, attention sinks, sliding-window layers, eager
@pytest.mark.parametrize("family", ["qwen3", "llama3", "gpt_oss"])
@pytest.mark.parametrize("chunk_tokens", [0, 8], ids=["full-logits", "chunked-head"])
@pytest.mark.parametrize("kind", RL_LOSS_KINDS)
def test_one_step_raises_the_positive_answer_and_lowers_the_negative_one(
    kind: str, chunk_tokens: int, family: str, load_tiny_model: Callable[[str], PreTrainedModel]
) -> None:
    """The trainer's step on one micro-batch: token scores on either head path, `rl_nll_loss`, backward, AdamW."""
    model = load_tiny_model(family).train()
    row = two_answers_row(model)
    before = answer_logprobs(model, row)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4))
    scores = packed_token_scores(model, row, chunk_tokens)
    rl_nll_loss(scores.nll, row, local_loss_tokens([row]), LossConfig(kind=kind)).loss.backward()
    optimizer.step()
    after = answer_logprobs(model, row)
    assert after["good"] > before["good"], (before, after)
    assert after["bad"] < before["bad"], (before, after)
