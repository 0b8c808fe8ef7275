"""Flex rows padded to length buckets: the real tokens' logits are unchanged, and the compiled kernels see few shapes.

CPU, fp32, forward only (torch's flex attention has no backward on CPU). The references are the same row
unpadded under sdpa and under flex padded to another length (a CPU flex row is always padded to a multiple of
`CPU_FLEX_MULTIPLE`: unpadded rows of some lengths came out wrong from torch's CPU kernel). Tolerance:
per-logit atol 1e-5 (fp32; flex at either padding and sdpa differ only in kernels and reduction order). The
recompile test turns dynamo's automatic dynamic shapes off, as transformers 5.17 compiles flex with
`dynamic=False`, so every new length is a new compile unless padding removes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from pydantic import ValidationError
from torch._dynamo.utils import counters
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.masking_utils import find_packed_sequence_indices
from transformers.processing_utils import ProcessorMixin

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.packing import PackItem, plan_micro_batches
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import attention_implementation, boundary_row
from foveal.trainer.model.flex_padding import (
    CPU_FLEX_MULTIPLE,
    bucket_length,
    flex_bucket,
    row_length,
    set_flex_bucket,
)
from foveal.trainer.model.forward import packed_inputs, packed_logits
from foveal.trainer.model.loading import load_model

LOGIT_ATOL = 1e-5
FLEX = "flex_attention"


@given(length=st.integers(1, 50_000), bucket=st.integers(1, 8192))
def test_bucket_length_is_the_smallest_multiple_of_the_bucket_that_holds_the_row(length: int, bucket: int) -> None:
    padded = bucket_length(length, bucket)
    assert padded % bucket == 0 and length <= padded < length + bucket


def test_bucket_zero_keeps_the_row_length_and_a_negative_bucket_is_refused() -> None:
    assert [bucket_length(n, 0) for n in (1, 2047, 2049)] == [1, 2047, 2049]
    assert [bucket_length(n, 2048) for n in (1, 2048, 2049, 16384)] == [2048, 2048, 4096, 16384]
    with pytest.raises(ContractError) as error:
        set_flex_bucket(torch.nn.Linear(1, 1), -1)
    assert error.value.field == "flex_bucket_tokens" and error.value.value == -1


@pytest.mark.parametrize(("budget", "bucket"), [(16384, 2048), (5000, 2048), (4096, 4096)])
def test_planned_rows_take_at_most_budget_over_bucket_lengths(budget: int, bucket: int) -> None:
    rng = random.Random(budget)
    items = [PackItem(f"s{i}", rng.randint(1, budget), rng.random() < 0.5) for i in range(2000)]
    rows = [sum(items[i].length for i in row) for row in plan_micro_batches(items, budget)]
    padded = {bucket_length(n, bucket) for n in rows}
    assert len(set(rows)) > len(padded)  # the rows themselves have many more lengths
    assert len(padded) <= -(-budget // bucket) and max(padded) < budget + bucket


def test_load_model_records_the_configured_bucket_and_only_flex_rows_use_it(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    folder = str(tiny_model_dir("qwen2_5_vl"))
    flex = load_model(ModelConfig(attn_implementation=FLEX, flex_bucket_tokens=512), folder, torch.device("cpu"))
    assert flex_bucket(flex) == 512
    sdpa = load_model(ModelConfig(flex_bucket_tokens=512), folder, torch.device("cpu"))
    assert flex_bucket(sdpa) == 0
    with pytest.raises(ValidationError):
        ModelConfig(flex_bucket_tokens=-1)


def _load(folder: Path, setting: str, bucket: int) -> torch.nn.Module:
    config = AutoConfig.from_pretrained(folder)
    auto = AutoModelForImageTextToText if getattr(config, "vision_config", None) else AutoModelForCausalLM
    implementation = attention_implementation(setting, config)
    model = auto.from_pretrained(folder, attn_implementation=implementation, dtype=torch.float32).eval()
    set_flex_bucket(model, bucket)
    return model


def _samples(processor: ProcessorMixin | None) -> list[PackSample]:
    """Text samples; for a VLM first an image sample from the processor (3-D mrope positions in the row)."""
    generator = torch.Generator().manual_seed(0)
    samples = [PackSample(f"t{n}", torch.randint(3, 500, (n,), generator=generator), [1.0] * n) for n in (37, 51)]
    if processor is None:
        return samples
    image = Image.new("RGB", (90, 60), "white")
    ImageDraw.Draw(image).ellipse((18, 12, 72, 48), fill="red")
    content = [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    out = processor(text=[text], images=[image], return_tensors="pt")
    ids = out["input_ids"][0]
    images = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    image_sample = PackSample("img", ids, [1.0] * len(ids), pixel_kwargs=images)
    return [image_sample, *samples]


@pytest.mark.parametrize("family", ["qwen3", "qwen2_5_vl"])
def test_padded_flex_row_gives_the_logits_of_the_unpadded_row(
    family: str, tiny_model_dir: Callable[[str], Path], tiny_processor: Callable[[str], ProcessorMixin]
) -> None:
    folder = tiny_model_dir(family)
    sdpa, flex = _load(folder, "sdpa", 64), _load(folder, FLEX, 64)
    processor = None if family == "qwen3" else tiny_processor(family)
    batch = collate_packed(_samples(processor), position_scheme(flex))
    assert batch.num_tokens % 64 != 0 and batch.position_ids.ndim == (2 if family == "qwen3" else 3)

    with torch.no_grad():  # the checks refuse flex on CPU under grad: no backward there
        inputs, unpadded = packed_inputs(flex, batch), packed_inputs(sdpa, batch)
    padded = bucket_length(batch.num_tokens, 64)
    assert inputs["input_ids"].shape == (1, padded) and inputs["position_ids"].shape[-1] == padded
    tail = inputs["position_ids"][..., batch.num_tokens :].reshape(-1, padded - batch.num_tokens)
    assert all(torch.equal(row, torch.arange(padded - batch.num_tokens)) for row in tail)  # every mrope row text-style
    documents = find_packed_sequence_indices(boundary_row(inputs["position_ids"]))[0]
    assert int(documents[batch.num_tokens]) == len(batch.sample_ids)  # the padding is a document of its own
    assert unpadded["input_ids"].shape == (1, batch.num_tokens) and "logits_to_keep" not in unpadded  # sdpa: as is

    with torch.no_grad():
        got = packed_logits(flex, batch)
        by_sdpa = packed_logits(sdpa, batch)
        set_flex_bucket(flex, 3 * CPU_FLEX_MULTIPLE)
        by_flex = packed_logits(flex, batch)
    assert row_length(flex, batch.num_tokens, batch.input_ids.device) == 3 * CPU_FLEX_MULTIPLE != padded
    assert got.shape == by_sdpa.shape == by_flex.shape == (1, batch.num_tokens, got.shape[-1])
    torch.testing.assert_close(got, by_sdpa, atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(got, by_flex, atol=LOGIT_ATOL, rtol=0)


def test_cpu_flex_rows_are_padded_to_a_multiple_of_64_even_without_a_bucket(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    """An 88-token row (37 + 51: 8 more than a multiple of 16) came out wrong from torch's CPU flex kernel unpadded."""
    folder = tiny_model_dir("qwen3")
    sdpa, flex = _load(folder, "sdpa", 0), _load(folder, FLEX, 0)
    batch = collate_packed(_samples(None), position_scheme(flex))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert batch.num_tokens == 88 and row_length(flex, 88, cpu) == 128 and row_length(flex, 128, cpu) == 128
    assert row_length(flex, 88, cuda) == 88 and row_length(sdpa, 88, cpu) == 88  # CUDA and sdpa rows: as they are
    with torch.no_grad():
        assert packed_inputs(flex, batch)["input_ids"].shape == (1, 128)
        torch.testing.assert_close(packed_logits(flex, batch), packed_logits(sdpa, batch), atol=LOGIT_ATOL, rtol=0)


def _row(lengths: list[int], generator: torch.Generator, model: torch.nn.Module) -> PackedBatch:
    tokens = [torch.randint(3, 500, (n,), generator=generator) for n in lengths]
    samples = [PackSample(f"s{i}", ids, [1.0] * len(ids)) for i, ids in enumerate(tokens)]
    return collate_packed(samples, position_scheme(model))


def test_flex_compiles_once_per_bucket_length_whatever_the_rows(tiny_model_dir: Callable[[str], Path]) -> None:
    bucket = 128
    model = _load(tiny_model_dir("qwen3"), FLEX, bucket)
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    rows = [[rng.randint(1, 120) for _ in range(rng.randint(1, 3))] for _ in range(8)]
    rows += [[bucket], [100, bucket - 100]]  # one sample filling a bucket (no padding, no packed samples), then two
    lengths = {sum(row) for row in rows}
    buckets = {bucket_length(n, bucket) for n in lengths}
    assert len(lengths) > len(buckets)
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False), torch.no_grad():
        for lengths_of_row in rows:
            packed_logits(model, _row(lengths_of_row, generator, model))
    # one graph for create_block_mask and one for flex_attention per bucket length, none per row length
    assert counters["stats"]["unique_graphs"] - before == 2 * len(buckets)
