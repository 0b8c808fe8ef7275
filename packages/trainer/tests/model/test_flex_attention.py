"""Flex attention on packed rows: a document BlockMask keeps each sample to itself and skips the blocks between.

CPU, fp32, forward only: torch's flex attention has no backward pass on CPU (the GPU benchmark trains with it).
transformers compiles the kernel and the mask builder (inductor's C++ backend on CPU), so the first forward of
each shape takes ~10-20 s here. The reference runs each sample alone and unpadded through the same weights under
sdpa, with the model's own position ids, so it shares nothing with packing or flex.

Tolerances (fp32; packed flex and single sdpa differ only in kernels and reduction order):
  per-token target log-probs: atol 1e-5;  summed loss: rtol 1e-6;  flex vs sdpa attention outputs: atol 1e-6.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.masking_utils import create_causal_mask
from transformers.processing_utils import ProcessorMixin

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.training.loss import token_nll
from foveal.trainer.model.attention import FLEX_ATTENTION, attention_implementation
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import load_model

LOGPROB_ATOL = 1e-5
LOSS_RTOL = 1e-6
KERNEL_ATOL = 1e-6
FLEX = "flex_attention"


# Two image samples (different sizes and counts, so 3-D mrope positions differ per sample), then a text-only one.
CONVERSATIONS = [
    ([((90, 60), "red")], "What color is the circle?", "The circle is red."),
    ([((64, 120), "blue"), ((64, 64), "green")], "Compare them.", "A tall blue one, a small one."),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


def _load(family: str, folder: Path, setting: str) -> torch.nn.Module:
    auto = AutoModelForCausalLM if family == "qwen3" else AutoModelForImageTextToText
    config = AutoConfig.from_pretrained(folder)
    implementation = attention_implementation(setting, config)
    return auto.from_pretrained(folder, attn_implementation=implementation, dtype=torch.float32).eval()


def _target_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, input_ids[0, 1:, None])[:, 0]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3"])
def test_packed_row_under_flex_matches_samples_run_alone(
    family: str, tiny_model_dir: Callable[[str], Path], single_inputs: Callable[..., list[dict[str, torch.Tensor]]]
) -> None:
    folder = tiny_model_dir(family)
    singles = single_inputs(family, CONVERSATIONS)
    reference, model = _load(family, folder, "sdpa"), _load(family, folder, FLEX)
    assert model.config.get_text_config()._attn_implementation == FLEX_ATTENTION
    samples = [
        PackSample(
            f"s{i}",
            x["input_ids"][0].tolist(),
            [1.0] * x["input_ids"].shape[1],
            pixel_kwargs={name: x[name] for name in ("pixel_values", "image_grid_thw") if name in x},
        )
        for i, x in enumerate(singles)
    ]
    batch = collate_packed(samples, position_scheme(model))
    if family != "qwen3":
        assert batch.position_ids.shape[0] == 4  # text + mrope rows
        assert len(batch.pixel_kwargs["image_grid_thw"]) == 3  # three images
    with torch.no_grad():
        alone = [_target_logprobs(reference(**x, use_cache=False).logits, x["input_ids"]) for x in singles]
        packed = -token_nll(packed_logits(model, batch), batch.labels)
    for (start, end), expected in zip(itertools.pairwise(batch.cu_seqlens.tolist()), alone, strict=True):
        torch.testing.assert_close(packed[0, start : end - 1], expected, atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(packed.sum(), torch.cat(alone).sum(), rtol=LOSS_RTOL, atol=0)


def _document_mask(lengths: list[int]) -> tuple[torch.Tensor, BlockMask]:
    """For a row of samples of `lengths`: the expected dense mask, and the BlockMask transformers builds for flex."""
    config = AutoConfig.for_model("qwen3", hidden_size=8, num_attention_heads=1, num_key_value_heads=1)
    config._attn_implementation = attention_implementation(FLEX, config)
    positions = torch.cat([torch.arange(n) for n in lengths]).view(1, -1)
    total = positions.shape[1]
    block_mask = create_causal_mask(
        config=config,
        inputs_embeds=torch.zeros(1, total, 8),
        attention_mask=None,
        past_key_values=None,
        position_ids=positions,
    )
    sample = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    token = torch.arange(total)
    expected = (sample[:, None] == sample[None, :]) & (token[:, None] >= token[None, :])
    return expected, block_mask


def test_flex_block_mask_is_causal_within_each_sample_and_skips_blocks_between_them() -> None:
    lengths = [300, 200, 540, 90]  # boundaries inside 128-token blocks, a sample shorter than a block
    expected, block_mask = _document_mask(lengths)
    assert isinstance(block_mask, BlockMask)
    size = block_mask.BLOCK_SIZE[0]
    blocks = -(-expected.shape[0] // size)
    padded = torch.zeros(blocks * size, blocks * size, dtype=torch.bool)
    padded[: expected.shape[0], : expected.shape[1]] = expected
    touched = padded.view(blocks, size, blocks, size).any(3).any(1)
    visited = block_mask.kv_num_blocks + block_mask.full_kv_num_blocks
    assert int(visited.sum()) == int(touched.sum())  # exactly the blocks a sample reaches: nothing more is computed
    assert int(touched.sum()) < blocks * (blocks + 1) // 2  # fewer than a causal mask over the whole row

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, expected.shape[0], 16, generator=generator) for _ in range(3))
    with torch.no_grad():
        got = flex_attention(q, k, v, block_mask=block_mask)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=expected)
    torch.testing.assert_close(got, want, atol=KERNEL_ATOL, rtol=0)


def test_flex_setting_gives_the_text_model_flex_and_the_vision_tower_sdpa(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    model = load_model(ModelConfig(attn_implementation=FLEX), str(tiny_model_dir("qwen2_5_vl")), torch.device("cpu"))
    assert model.config.get_text_config()._attn_implementation == FLEX_ATTENTION
    assert model.config.vision_config._attn_implementation == "sdpa"
    text_config = AutoConfig.from_pretrained(tiny_model_dir("qwen3"))
    assert attention_implementation(FLEX, text_config) == FLEX_ATTENTION
    assert attention_implementation("eager", model.config) == "eager"  # other settings reach every tower unchanged


def test_training_with_flex_on_cpu_is_refused_before_the_forward(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    model = _load("qwen3", tiny_model_dir("qwen3"), FLEX)
    batch = collate_packed([PackSample("a", [1, 2, 3], [1.0] * 3)], position_scheme(model))
    with pytest.raises(ContractError) as error:
        packed_logits(model, batch)
    assert error.value.field == "attn_implementation" and error.value.value == FLEX
