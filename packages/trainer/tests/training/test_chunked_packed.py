"""SFT and RL losses of tiny models through the chunked head equal the full-logits path: loss and every
parameter's gradient (fp32 on CPU), text and VLM classes, and a flex row padded to its bucket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from foveal.configs.trainer import LossConfig
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import attention_implementation
from foveal.trainer.model.flex_padding import set_flex_bucket
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.rl.loss import rl_loss, rl_nll_loss
from foveal.trainer.training.chunked_ce import packed_token_nll
from foveal.trainer.training.loss import local_loss_tokens, sft_nll_loss

CHUNK = 16  # rows of 37 + 51 tokens: several chunks and a partial last one
ATOL = 1e-5


def _row(model: torch.nn.Module) -> PackedBatch:
    """Two samples with prompt tokens (weight 0), completions, inference logprobs and advantages."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for index, length in enumerate((37, 51)):
        ids = torch.randint(3, 500, (length,), generator=generator).tolist()
        weights = [0.0] * 10 + [1.0] * (length - 10)
        logprobs = (-torch.rand(length, generator=generator) * 3).tolist()
        advantages = [0.0] * 10 + [1.5 - 2.0 * index] * (length - 10)
        samples.append(PackSample(f"s{index}", ids, weights, logprobs=logprobs, advantages=advantages))
    return collate_packed(samples, position_scheme(model))


def _loss_and_grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [loss.detach(), *(torch.zeros_like(p) if g is None else g for (_, p), g in zip(named, grads, strict=True))]


def _assert_same(model: torch.nn.Module, loss_of: Callable[[int], torch.Tensor]) -> None:
    chunked, plain = _loss_and_grads(model, loss_of(CHUNK)), _loss_and_grads(model, loss_of(0))
    assert float(plain[0]) != 0.0
    for got, want in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["qwen3", "qwen2_5_vl"])
def test_sft_loss_through_the_chunked_head_equals_the_full_logits(
    family: str, load_tiny_model: Callable[[str], PreTrainedModel]
) -> None:
    model = load_tiny_model(family)
    batch = _row(model)
    tokens = local_loss_tokens([batch])
    _assert_same(model, lambda chunk: sft_nll_loss(packed_token_nll(model, batch, chunk), batch, tokens))


@pytest.mark.parametrize("kind", ["importance_sampling", "ppo", "gspo"])
def test_rl_loss_through_the_chunked_head_equals_the_full_logits(
    kind: str, load_tiny_model: Callable[[str], PreTrainedModel]
) -> None:
    model = load_tiny_model("qwen3")
    batch = _row(model)
    tokens, config = local_loss_tokens([batch]), LossConfig(kind=kind, kl_coef=0.1)

    def loss_of(chunk: int) -> torch.Tensor:
        return rl_nll_loss(packed_token_nll(model, batch, chunk), batch, tokens, config).loss

    _assert_same(model, loss_of)
    by_logits = rl_loss(packed_logits(model, batch), batch, tokens, config)
    torch.testing.assert_close(by_logits.loss, loss_of(0), atol=0, rtol=0)


def test_a_padded_flex_row_gives_the_same_token_nll_chunked(tiny_model_dir: Callable[[str], Path]) -> None:
    """Flex pads the row to its bucket; the hidden states come back cut to the real tokens, as the logits do."""
    folder = tiny_model_dir("qwen3")
    implementation = attention_implementation("flex_attention", AutoConfig.from_pretrained(folder))
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation, dtype=torch.float32)
    set_flex_bucket(model, 64)
    batch = _row(model)
    with torch.no_grad():  # the checks refuse flex on CPU under grad
        chunked, plain = packed_token_nll(model, batch, CHUNK), packed_token_nll(model, batch, 0)
    assert chunked.shape == batch.labels.shape
    torch.testing.assert_close(chunked, plain, atol=ATOL, rtol=0)
