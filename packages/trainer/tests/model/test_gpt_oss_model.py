"""The tiny gpt-oss: the real GptOssForCausalLM (experts, attention sinks, sliding-window layers, YaRN rope) with the
tokenizer's ids, the attention kernels that compute its sinks, and a packed row that scores like each sample alone
(a sample longer than the sliding window included)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from foveal.renderers.tiny import TinyTokenIds
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import UnsupportedAttention, set_attention
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import generation_attention, training_attention
from foveal.trainer.training.loss import token_nll

FAMILY = "gpt_oss"


def test_the_tiny_model_is_the_real_class_with_the_tokenizers_ids(
    tiny_model_dir: Callable[[str], Path], load_tiny_model: Callable[[str], PreTrainedModel]
) -> None:
    folder = tiny_model_dir(FAMILY)
    tokenizer, ids = AutoTokenizer.from_pretrained(folder), TinyTokenIds.from_folder(folder)
    model = load_tiny_model(FAMILY)
    config = model.config
    assert type(model).__name__ == "GptOssForCausalLM" and config.vocab_size == len(tokenizer) == ids.vocab_size
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        tokenizer.convert_tokens_to_ids("<|return|>"),
        ids.pad_id,
    )
    stops = tokenizer.convert_tokens_to_ids(["<|return|>", "<|endoftext|>", "<|call|>"])
    assert model.generation_config.eos_token_id == stops
    assert (config.num_local_experts, config.num_experts_per_tok, config.sliding_window) == (4, 2, 64)
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["factor"] == 8.0
    assert model.model.layers[0].self_attn.sinks.shape == (config.num_attention_heads,)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert config._attn_implementation == "eager"  # transformers' own choice: it has no sdpa path


def test_auto_attention_is_eager_and_kernels_without_sinks_are_refused(
    tiny_model_dir: Callable[[str], Path], load_tiny_model: Callable[[str], PreTrainedModel]
) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir(FAMILY))
    for device in ("cpu", "cuda"):
        assert training_attention("auto", torch.device(device), config) == "eager"
    assert generation_attention("varlen", config) == generation_attention("flex_attention", config) == "eager"
    model = load_tiny_model(FAMILY)
    for setting in ("sdpa", "varlen"):
        with pytest.raises(UnsupportedAttention) as refused:
            set_attention(model, setting)
        assert (refused.value.field, refused.value.value) == ("model.attn_implementation", setting)
    set_attention(model, "eager")


def test_a_packed_row_scores_and_trains_like_each_sample_alone(
    load_tiny_model: Callable[[str], PreTrainedModel],
) -> None:
    model = load_tiny_model(FAMILY).train()
    torch.manual_seed(0)
    lengths = (9, 100, 23)  # the 100-token sample is longer than the 64-token sliding window
    samples = [torch.randint(0, 2000, (n,)).tolist() for n in lengths]
    packed = collate_packed(
        [PackSample(f"s{i}", ids, [1.0] * len(ids)) for i, ids in enumerate(samples)], position_scheme(model)
    )
    nll = token_nll(packed_logits(model, packed), packed.labels)
    nll.sum().backward()
    packed_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    alone, total = [], 0.0
    for ids in samples:
        tokens = torch.tensor([ids])
        logits = model(input_ids=tokens).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="sum")
        loss.backward()
        alone.append(-torch.log_softmax(logits[0, :-1], -1).gather(1, tokens[0, 1:, None])[:, 0])
        total += loss.item()
    bounds = packed.cu_seqlens.tolist()
    for sample, start, end in zip(alone, bounds[:-1], bounds[1:], strict=True):
        torch.testing.assert_close(nll[0, start : end - 1], sample.detach(), atol=1e-5, rtol=0)
    assert math.isclose(float(nll.sum().detach()), total, rel_tol=1e-6)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(packed_grads[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # why the trainer builds the masks: given only the position row, the model leaks
        leaked = token_nll(model(input_ids=packed.input_ids, position_ids=packed.position_ids).logits, packed.labels)
    assert float((leaked[0, bounds[1] : bounds[2] - 1] - alone[1].detach()).abs().max()) > 1e-2
