"""Varlen attention (`[model].attn_implementation = "varlen"`): exact where sdpa is, one call per vision layer.

CPU, fp32: the function's sdpa path (one sdpa call per document) against transformers' own sdpa on the same
packed row (block-diagonal causal mask), in logits and every parameter gradient, and against each sample run
alone. One model per test, switched with `set_attention`, so both sides share the weights.
GPU (`-m gpu`, skipped without CUDA): torch's `varlen_attn` in bf16 against sdpa in bf16 on the same model.

Tolerances: CPU fp32 logits and log-probs atol 1e-5, gradients atol 1e-5 rtol 1e-4 (reduction order only);
GPU bf16 max |varlen - sdpa| <= 2e-2 x max |sdpa| (bf16 keeps 8 mantissa bits, 3.9e-3 per rounding, and the
two kernels round at different points through the layers); the kernel alone in bf16 against fp32: atol 2e-2.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AttentionInterface

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import check_packed_attention, set_attention
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import load_model
from foveal.trainer.model.varlen import VARLEN_ATTENTION, varlen_attention_forward
from foveal.trainer.training.loss import token_nll

ATOL, GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-5, 1e-4
GPU_RELATIVE, GPU_KERNEL_ATOL = 2e-2, 2e-2
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# A 224x224 image spans several vision windows; then two smaller images, then a text-only sample.
CONVERSATIONS = [
    ([((224, 224), "red")], "What is in the picture?", "A red circle on white."),
    ([((64, 120), "blue"), ((64, 64), "green")], "Compare the two.", "A tall blue one, a small one."),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


def _packed(model: torch.nn.Module, singles: list[dict[str, torch.Tensor]]) -> PackedBatch:
    generator = torch.Generator().manual_seed(0)
    samples = [
        PackSample(
            f"s{i}",
            x["input_ids"][0].tolist(),
            torch.rand(x["input_ids"].shape[1], generator=generator).tolist(),
            pixel_kwargs={name: x[name] for name in ("pixel_values", "image_grid_thw") if name in x},
        )
        for i, x in enumerate(singles)
    ]
    return collate_packed(samples, position_scheme(model))


Setup = Callable[[str, str, str], tuple[torch.nn.Module, list[dict[str, torch.Tensor]], PackedBatch]]


@pytest.fixture
def setup(tiny_model_dir: Callable[[str], Path], single_inputs: Callable[..., Any]) -> Setup:
    """(family, device, dtype) -> a model loaded under sdpa, the samples alone, and their packed row."""

    def build(family: str, device: str, dtype: str) -> tuple[torch.nn.Module, Any, PackedBatch]:
        folder = tiny_model_dir(family)
        config = ModelConfig(name_or_path=str(folder), dtype=dtype, attn_implementation="sdpa", kernels="torch")
        model = load_model(config, str(folder), torch.device(device))
        singles = single_inputs(family, CONVERSATIONS)
        return model, singles, _packed(model, singles).to(torch.device(device))

    return build


def _logits_and_grads(model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = packed_logits(model, batch)
    (token_nll(logits, batch.labels) * batch.loss_weights).sum().backward()
    return logits.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _per_sample(batch: PackedBatch, row: torch.Tensor) -> Iterator[torch.Tensor]:
    for start, end in itertools.pairwise(batch.cu_seqlens.tolist()):
        yield row[0, start : end - 1]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "glm4v", "qwen3"])
def test_packed_row_under_varlen_equals_sdpa_and_each_sample_alone(family: str, setup: Setup) -> None:
    model, singles, batch = setup(family, "cpu", "float32")
    with torch.no_grad():
        alone = [-token_nll(model(**x, use_cache=False).logits[:, :-1], x["input_ids"][:, 1:])[0] for x in singles]
    sdpa_logits, sdpa_grads = _logits_and_grads(model, batch)
    set_attention(model, "varlen")
    assert model.config.get_text_config()._attn_implementation == VARLEN_ATTENTION
    logits, grads = _logits_and_grads(model, batch)

    torch.testing.assert_close(logits, sdpa_logits, atol=ATOL, rtol=0)
    packed = -token_nll(logits, batch.labels)
    for got, expected in zip(_per_sample(batch, packed), alone, strict=True):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert grads.keys() == sdpa_grads.keys()
    if family != "qwen3":
        assert any(name.startswith("model.visual.") for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, sdpa_grads[name], atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


def _counting(calls: list[dict[str, Any]], function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, recording each call's keyword arguments (its signature kept for `inspect`)."""

    @functools.wraps(function)
    def count(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return function(*args, **kwargs)

    return count


def _assert_near(got: torch.Tensor, expected: torch.Tensor, device: str) -> None:
    """fp32 on CPU: atol 1e-5; bf16 on CUDA: max |got - expected| <= 2e-2 x max |expected|."""
    if device == "cpu":
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    else:
        assert (got.float() - expected.float()).abs().max() <= GPU_RELATIVE * expected.float().abs().max()


DEVICES = [("cpu", "float32"), pytest.param("cuda", "bfloat16", marks=[pytest.mark.gpu, CUDA])]


@pytest.mark.parametrize(("device", "dtype"), DEVICES)
def test_vision_tower_makes_one_varlen_call_per_layer_and_matches_sdpa(
    device: str,
    dtype: str,
    setup: Setup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _, batch = setup("qwen2_5_vl", device, dtype)
    visual, pixels = model.model.visual, batch.pixel_kwargs
    registry = AttentionInterface._global_mapping
    sdpa_calls: list[dict[str, Any]] = []
    monkeypatch.setitem(registry, "sdpa", _counting(sdpa_calls, registry["sdpa"]))
    with torch.no_grad():
        expected = visual(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"]).pooler_output
    set_attention(model, "varlen")
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(registry, VARLEN_ATTENTION, _counting(calls, varlen_attention_forward))
    with torch.no_grad():
        got = visual(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"]).pooler_output

    _assert_near(got, expected, device)
    depth = model.config.vision_config.depth
    assert len(calls) == depth and all(call["cu_seq_lens_q"] is not None for call in calls)
    windows = len(calls[0]["cu_seq_lens_q"]) - 1  # layer 0 attends within windows, the last layer within images
    assert windows > len(pixels["image_grid_thw"]) and len(sdpa_calls) == windows + len(pixels["image_grid_thw"])


def test_varlen_setting_loads_on_both_towers(tiny_model_dir: Callable[[str], Path]) -> None:
    folder = tiny_model_dir("qwen2_5_vl")
    config = ModelConfig(name_or_path=str(folder), attn_implementation="varlen")
    model = load_model(config, str(folder), torch.device("cpu"))
    assert model.config.get_text_config()._attn_implementation == VARLEN_ATTENTION
    assert model.model.visual.config._attn_implementation == VARLEN_ATTENTION
    check_packed_attention(model.config.get_text_config(), torch.device("cpu"), backward=True)


class _Attention(torch.nn.Module):
    is_causal = True


def _random_documents(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """q with 4 heads, k/v with 2 (GQA), three documents in one row, and their position row."""
    generator = torch.Generator().manual_seed(0)
    lengths = [37, 64, 90]
    q, k, v = (torch.randn(1, heads, sum(lengths), 32, generator=generator) for heads in (4, 2, 2))
    positions = torch.cat([torch.arange(n) for n in lengths]).view(1, -1)
    return *(x.to(device, dtype) for x in (q, k, v)), positions.to(device)


def _block_causal_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Dense sdpa in fp32 with a block-diagonal causal mask, `[batch, seq, heads, dim]`."""
    document = torch.cumsum(positions[0] == 0, 0)
    token = torch.arange(positions.shape[1], device=q.device)
    mask = (document[:, None] == document[None, :]) & (token[:, None] >= token[None, :])
    q, k, v = (x.float() for x in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)


@pytest.mark.parametrize(
    ("device", "dtype", "atol"),
    [
        ("cpu", torch.float32, 1e-6),
        pytest.param("cuda", torch.bfloat16, GPU_KERNEL_ATOL, marks=[pytest.mark.gpu, CUDA]),
    ],
)
def test_function_keeps_each_document_causal_with_gqa(device: str, dtype: torch.dtype, atol: float) -> None:
    q, k, v, positions = _random_documents(device, dtype)
    got, _ = varlen_attention_forward(_Attention(), q, k, v, None, position_ids=positions)
    assert got.shape == (1, q.shape[2], 4, 32) and got.dtype == dtype
    torch.testing.assert_close(got.float(), _block_causal_reference(q, k, v, positions), atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"attention_mask": torch.ones(1, 1, 191, 191, dtype=torch.bool)}, "attention_mask"),
        ({"sliding_window": 16}, "sliding_window"),
        ({"dropout": 0.1}, "attention_dropout"),
        ({"position_ids": torch.zeros(2, 191, dtype=torch.long)}, "position_ids"),
    ],
)
def test_what_varlen_cannot_honour_is_refused(kwargs: dict[str, Any], field: str) -> None:
    q, k, v, positions = _random_documents("cpu", torch.float32)
    arguments = {"attention_mask": None, "position_ids": positions} | kwargs
    with pytest.raises(ContractError) as error:
        varlen_attention_forward(_Attention(), q, k, v, **arguments)
    assert error.value.field == field


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3"])
def test_cuda_bf16_varlen_kernel_matches_sdpa(
    family: str,
    setup: Setup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch.nn.attention import varlen

    model, _, batch = setup(family, "cuda", "bfloat16")
    sdpa_logits, _ = _logits_and_grads(model, batch)
    set_attention(model, "varlen")
    kernel_calls: list[dict[str, Any]] = []
    monkeypatch.setattr(varlen, "varlen_attn", _counting(kernel_calls, varlen.varlen_attn))
    logits, grads = _logits_and_grads(model, batch)

    assert len(kernel_calls) >= model.config.get_text_config().num_hidden_layers  # the kernel ran, not the fallback
    _assert_near(logits, sdpa_logits, "cuda")
    assert all(torch.isfinite(grad).all() for grad in grads.values())
