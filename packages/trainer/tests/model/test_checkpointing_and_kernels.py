"""`[model].activation_checkpointing` and `[model].kernels`: the same gradients, less memory or fused kernels.

CPU, fp32: checkpointing every layer, every second layer, and none give the same loss and gradients on a
packed row of the tiny Qwen2.5-VL (recompute is exact; atol 1e-6), and arm exactly the chosen layers of each
stack. The kernels setting: auto is the model's own modules off CUDA, liger is refused there and without
liger-kernel installed, and the module recognition finds every RMSNorm and SwiGLU MLP of the towers.
GPU (`-m gpu`, needs liger-kernel): liger's RMSNorm/SwiGLU in bf16 against the model's own modules in bf16 on
the same packed row: loss within 1e-2 relative, gradients within 5e-2 x their max (bf16 rounds at 3.9e-3 and
the fused kernels round at different points).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.checkpointing import checkpointed, layer_stacks, set_activation_checkpointing
from foveal.trainer.model.fused_kernels import apply_kernels, is_rms_norm, is_swiglu, liger_installed, resolve_kernels
from foveal.trainer.model.loading import load_model, training_attention
from foveal.trainer.training.chunked_ce import packed_token_nll

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LIGER = pytest.mark.skipif(not liger_installed(), reason="needs liger-kernel (foveal-trainer[gpu])")
CONVERSATIONS = [
    ([((224, 224), "red")], "What is in the picture?", "A red circle on white."),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


def _load(folder: Path, device: str, **settings: Any) -> torch.nn.Module:
    config = ModelConfig(name_or_path=str(folder), **settings)
    return load_model(config, str(folder), torch.device(device))


def _row(model: torch.nn.Module, single_inputs: Callable[..., Any], device: str) -> PackedBatch:
    samples = [
        PackSample(f"s{i}", x["input_ids"][0].tolist(), [1.0] * x["input_ids"].shape[1], pixel_kwargs=_pixels(x))
        for i, x in enumerate(single_inputs("qwen2_5_vl", CONVERSATIONS))
    ]
    return collate_packed(samples, position_scheme(model)).to(torch.device(device))


def _pixels(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: inputs[name] for name in ("pixel_values", "image_grid_thw") if name in inputs}


def _loss_and_grads(model: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16, enabled=batch.input_ids.is_cuda):
        loss = packed_token_nll(model, batch, 64).sum() / batch.num_tokens
    loss.backward()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach().float(), grads


def test_checkpointing_every_k_layers_keeps_loss_and_gradients(
    tiny_model_dir: Callable[[str], Path], single_inputs: Callable[..., Any]
) -> None:
    model = _load(tiny_model_dir("qwen2_5_vl"), "cpu", dtype="float32")
    batch = _row(model, single_inputs, "cpu")
    reference = _loss_and_grads(model, batch)
    for every in (1, 2, 0):
        armed = set_activation_checkpointing(model, every)
        stacks = layer_stacks(model)
        assert len(stacks) == 2  # the text decoder layers and the vision blocks
        assert armed == sum(checkpointed(i, every) for stack in stacks for i in range(len(stack)))
        assert [layer.gradient_checkpointing for layer in stacks[0]] == [
            checkpointed(i, every) for i in range(len(stacks[0]))
        ]
        loss, grads = _loss_and_grads(model, batch)
        torch.testing.assert_close(loss, reference[0], atol=1e-6, rtol=0)
        assert grads.keys() == reference[1].keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_checkpointing_setting_is_loaded_and_checked(tiny_model_dir: Callable[[str], Path]) -> None:
    model = _load(tiny_model_dir("qwen2_5_vl"), "cpu", activation_checkpointing=2)
    text_layers = layer_stacks(model)[0]
    assert [layer.gradient_checkpointing for layer in text_layers] == [i % 2 == 0 for i in range(len(text_layers))]
    assert not any(layer.gradient_checkpointing for layer in layer_stacks(_load(tiny_model_dir("qwen3"), "cpu"))[0])
    assert checkpointed(0, 3) and not checkpointed(1, 3) and checkpointed(3, 3) and not checkpointed(0, 0)
    with pytest.raises(ContractError) as error:
        set_activation_checkpointing(model, -1)
    assert error.value.field == "model.activation_checkpointing" and error.value.value == -1
    with pytest.raises(ValueError, match="activation_checkpointing"):
        ModelConfig(activation_checkpointing=-1)


def test_auto_settings_resolve_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_attention("auto", cpu) == "sdpa" and training_attention("auto", cuda) == "varlen"
    assert training_attention("flex_attention", cuda) == "flex_attention"
    assert resolve_kernels("auto", cpu) == "torch" and resolve_kernels("torch", cuda) == "torch"
    assert resolve_kernels("auto", cuda) == ("liger" if liger_installed() else "torch")
    with pytest.raises(ContractError) as error:
        resolve_kernels("liger", cpu)
    assert error.value.field == "model.kernels" and "CUDA" in str(error.value)


@pytest.mark.skipif(liger_installed(), reason="liger-kernel is installed here")
def test_liger_without_the_extra_names_it() -> None:
    with pytest.raises(ContractError, match=r"foveal-trainer\[gpu\]"):
        resolve_kernels("liger", torch.device("cuda"))


def test_kernel_recognition_finds_every_norm_and_swiglu(tiny_model_dir: Callable[[str], Path]) -> None:
    model = _load(tiny_model_dir("qwen2_5_vl"), "cpu")
    text, vision = model.config.text_config, model.config.vision_config
    norms = sum(map(is_rms_norm, model.modules()))
    swiglus = sum(map(is_swiglu, model.modules()))
    # text: 2 per layer + the final norm; vision: 2 per block + the merger's ln_q
    assert norms == 2 * text.num_hidden_layers + 1 + 2 * vision.depth + 1
    assert swiglus == text.num_hidden_layers + vision.depth
    assert apply_kernels(model, "torch", torch.device("cpu")) == {"rms_norm": 0, "swiglu": 0}


@pytest.mark.gpu
@CUDA
@LIGER
def test_liger_kernels_match_the_models_own_on_gpu(
    tiny_model_dir: Callable[[str], Path], single_inputs: Callable[..., Any]
) -> None:
    folder = tiny_model_dir("qwen2_5_vl")
    model = _load(folder, "cuda", dtype="bfloat16", attn_implementation="varlen", kernels="torch")
    batch = _row(model, single_inputs, "cuda")
    reference = _loss_and_grads(model, batch)
    counts = apply_kernels(model, "liger", torch.device("cuda"))
    assert counts["rms_norm"] > 0 and counts["swiglu"] > 0
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, reference[0], atol=0, rtol=1e-2)
    for name, grad in grads.items():
        scale = float(reference[1][name].abs().max()) or 1.0
        assert float((grad - reference[1][name]).abs().max()) <= 5e-2 * scale, name
    assert apply_kernels(model, "torch", torch.device("cuda")) == {"rms_norm": 0, "swiglu": 0}
    torch.testing.assert_close(_loss_and_grads(model, batch)[0], reference[0], atol=0, rtol=1e-6)
