"""The GPU paths of a training step and a weight update, each against an independent reference.

Each comparison is a function of the device and precision. The `gpu` tests (`-m gpu`, skipped without CUDA) run
it as training runs a real (bf16) checkpoint on CUDA: bf16 weights under bf16 autocast
(`resolve_precision("auto", cuda)`). The CPU parametrizations run the very same function in fp32, so the test code
itself is checked in the default run.

  - packed rows under sdpa, varlen and flex, forward and backward, against sdpa on each sample alone (unpacked,
    the model's own position ids): per-token NLL and every parameter's gradient;
  - the chunked linear cross entropy of the SFT step (`packed_sft_loss`, `_WeightedLinearCrossEntropy`) and of
    `packed_token_nll` (`_LinearCrossEntropy`) against the plain full-logits cross entropy: loss and gradients;
  - one optimizer step on the device, checkpointed by the trainer's `Checkpointer`, then applied to a served
    model by the server's `read_checkpoint` / `matched_update` / `apply_update`: every served tensor equals the
    checkpoint's, and the served model's logits equal the trained model's.

Tolerances. CPU fp32 (reduction order only): NLL atol 1e-5; gradients atol 1e-5 + rtol 1e-4. CUDA bf16 autocast
(8 mantissa bits, 3.9e-3 relative per rounding, and the two sides round at different points through the layers):
NLL max |diff| <= 3e-2 absolute (the NLL is ~log(vocab) ~ 7) and mean |diff| <= 5e-3; each gradient
max |diff| <= 5e-2 x max |reference|. A packed row whose samples see each other (one causal row, the boundaries
dropped) is checked to miss that NLL bound, so the bound can tell a leak from rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor

from foveal.configs.model import ModelConfig
from foveal.configs.trainer import CheckpointConfig, OptimConfig
from foveal.trainer.data.collate import IGNORE_INDEX, PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.attention import set_attention
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import Precision, load_model, resolve_precision
from foveal.trainer.serving.weights import apply_update, matched_update, read_checkpoint
from foveal.trainer.training.checkpoint import Checkpointer, TrainingState
from foveal.trainer.training.chunked_ce import packed_sft_loss, packed_token_nll
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.training.loss import local_loss_tokens, packed_token_weights, token_nll
from foveal.trainer.training.optim import build_optimizer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU = [pytest.mark.gpu, CUDA]


@dataclass(frozen=True)
class Bounds:
    """How far a computation may be from its reference on one device and precision."""

    nll_max: float
    nll_mean: float
    grad_atol: float
    grad_rtol: float
    grad_of_max: float

    def check_nll(self, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        difference = (got.float() - want.float()).abs()
        assert float(difference.max()) <= self.nll_max, (what, float(difference.max()))
        assert float(difference.mean()) <= self.nll_mean, (what, float(difference.mean()))

    def check_grads(self, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
        assert got.keys() == want.keys() and got
        for name, grad in got.items():
            reference = want[name].float()
            slack = self.grad_atol + self.grad_of_max * float(reference.abs().max())
            torch.testing.assert_close(grad.float(), reference, atol=slack, rtol=self.grad_rtol, msg=name)


FP32 = Bounds(nll_max=1e-5, nll_mean=1e-5, grad_atol=1e-5, grad_rtol=1e-4, grad_of_max=0.0)
BF16 = Bounds(nll_max=3e-2, nll_mean=5e-3, grad_atol=0.0, grad_rtol=0.0, grad_of_max=5e-2)
DEVICES = [pytest.param("cpu", id="cpu-fp32"), pytest.param("cuda", id="cuda-bf16", marks=GPU)]

# A 224x224 image spans several vision windows; then two smaller images, then a text-only sample.
CONVERSATIONS = [
    ([((224, 224), "red")], "What is in the picture?", "A red circle on white."),
    ([((64, 120), "blue"), ((64, 64), "green")], "Compare the two.", "A tall blue one, a small one."),
    ([], "What is 17 * 3?", "17 * 3 = 51."),
]


def _bounds(device: str) -> Bounds:
    return FP32 if device == "cpu" else BF16


def _dtype(device: str) -> str:
    """The weights' dtype: bf16 on CUDA, as real checkpoints are stored (with fp32 weights, q/k/v reach attention
    in fp32 under autocast and varlen takes its sdpa fallback), fp32 on CPU."""
    return "float32" if device == "cpu" else "bfloat16"


def _load(folder: Path, device: str, attention: str = "sdpa") -> tuple[torch.nn.Module, Precision]:
    """The model as training loads it and the precision training runs it in (bf16 autocast on CUDA)."""
    config = ModelConfig(name_or_path=str(folder), dtype=_dtype(device), attn_implementation=attention, kernels="torch")
    target = torch.device(device)
    return load_model(config, str(folder), target), resolve_precision("auto", target)


def _packed(model: torch.nn.Module, singles: list[dict[str, torch.Tensor]], device: str) -> PackedBatch:
    """The samples packed in one row, with random loss weights (the same on both sides of every comparison)."""
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
    return collate_packed(samples, position_scheme(model)).to(torch.device(device))


def _spans(batch: PackedBatch) -> Iterator[tuple[int, int]]:
    """Each sample's scored positions in the row: all but its last token (which predicts nothing)."""
    for start, end in itertools.pairwise(batch.cu_seqlens.tolist()):
        yield start, end - 1


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def alone_under_sdpa(
    model: torch.nn.Module, precision: Precision, singles: list[dict[str, torch.Tensor]], batch: PackedBatch
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The reference: each sample alone and unpacked through sdpa with the model's own inputs; its per-token NLL
    and the gradient of the summed weighted NLL (one backward per sample, accumulated)."""
    set_attention(model, "sdpa")
    model.zero_grad(set_to_none=True)
    nll = []
    for x, (start, end) in zip(singles, _spans(batch), strict=True):
        inputs = {name: value.to(batch.input_ids.device) for name, value in x.items()}
        with precision.autocast():
            logits = model(**inputs, use_cache=False).logits[:, :-1]
        sample_nll = token_nll(logits, inputs["input_ids"][:, 1:])
        (sample_nll * batch.loss_weights[:, start:end]).sum().backward()
        nll.append(sample_nll.detach()[0])
    return nll, _grads(model)


def packed_under(
    model: torch.nn.Module, precision: Precision, batch: PackedBatch, attention: str, backward: bool
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The packed row through `attention` as a training step runs it: per-sample NLL and gradients."""
    set_attention(model, attention)
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(backward), precision.autocast():
        nll = token_nll(packed_logits(model, batch), batch.labels)
    if backward:
        (nll * batch.loss_weights).sum().backward()
    return [nll.detach()[0, start:end] for start, end in _spans(batch)], _grads(model)


def check_packed_against_alone(
    folder: Path, singles: list[dict[str, torch.Tensor]], device: str, attention: str, backward: bool
) -> None:
    model, precision = _load(folder, device)
    batch = _packed(model, singles, device)
    alone, alone_grads = alone_under_sdpa(model, precision, singles, batch)
    packed, packed_grads = packed_under(model, precision, batch, attention, backward)
    bounds = _bounds(device)
    for index, (got, want) in enumerate(zip(packed, alone, strict=True)):
        bounds.check_nll(got, want, f"sample {index}")
    if backward:
        bounds.check_grads(packed_grads, alone_grads)


def leaky_row_misses_the_bound(folder: Path, singles: list[dict[str, torch.Tensor]], device: str) -> None:
    """Control for a text model: the same row as one causal sequence (positions never restart, so every sample
    sees the ones before it) must miss the NLL bound for the later samples."""
    model, precision = _load(folder, device)
    batch = _packed(model, singles, device)
    alone, _ = alone_under_sdpa(model, precision, singles, batch)
    positions = torch.arange(batch.num_tokens, device=batch.input_ids.device).view(1, -1)
    with torch.no_grad(), precision.autocast():
        logits = model(input_ids=batch.input_ids, position_ids=positions, attention_mask=None, use_cache=False).logits
    nll = token_nll(logits, batch.labels)
    (_, _), *later = list(_spans(batch))
    worst = max(float((nll[0, s:e] - want).abs().max()) for (s, e), want in zip(later, alone[1:], strict=True))
    assert worst > _bounds(device).nll_max, worst


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3"])
@pytest.mark.parametrize(
    ("device", "attention"),
    [
        pytest.param("cpu", "sdpa", id="cpu-fp32-sdpa"),
        pytest.param("cpu", "varlen", id="cpu-fp32-varlen"),
        pytest.param("cuda", "sdpa", id="cuda-bf16-sdpa", marks=GPU),
        pytest.param("cuda", "varlen", id="cuda-bf16-varlen", marks=GPU),
        pytest.param("cuda", "flex_attention", id="cuda-bf16-flex", marks=GPU),
    ],
)
def test_packed_row_forward_and_backward_equal_sdpa_on_each_sample_alone(
    family: str,
    device: str,
    attention: str,
    tiny_model_dir: Callable[[str], Path],
    single_inputs: Callable[..., list[dict[str, torch.Tensor]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    if device == "cuda" and attention == "varlen":  # the kernel must run under autocast, not the sdpa fallback
        from torch.nn.attention import varlen

        kernel = varlen.varlen_attn
        monkeypatch.setattr(varlen, "varlen_attn", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    check_packed_against_alone(tiny_model_dir(family), single_inputs(family, CONVERSATIONS), device, attention, True)
    if device == "cuda" and attention == "varlen":
        assert len(calls) >= 2, "torch's varlen_attn never ran: the packed row took the sdpa fallback"


@pytest.mark.slow  # torch compiles flex attention on CPU (inductor's C++ backend): tens of seconds per shape
def test_packed_row_under_flex_on_cpu_equals_sdpa_alone_forward(
    tiny_model_dir: Callable[[str], Path], single_inputs: Callable[..., list[dict[str, torch.Tensor]]]
) -> None:
    """CPU check of the flex comparison's code (forward only: flex has no backward on CPU)."""
    check_packed_against_alone(
        tiny_model_dir("qwen2_5_vl"), single_inputs("qwen2_5_vl", CONVERSATIONS), "cpu", "flex_attention", False
    )


@pytest.mark.parametrize("device", DEVICES)
def test_a_row_whose_samples_see_each_other_misses_the_bound(
    device: str,
    tiny_model_dir: Callable[[str], Path],
    single_inputs: Callable[..., list[dict[str, torch.Tensor]]],
) -> None:
    leaky_row_misses_the_bound(tiny_model_dir("qwen3"), single_inputs("qwen3", CONVERSATIONS), device)


def _loss_and_grads(model: torch.nn.Module, loss: Callable[[], torch.Tensor], precision: Precision) -> tuple:
    model.zero_grad(set_to_none=True)
    with precision.autocast():
        value = loss()
    value.backward()
    return value.detach().float(), _grads(model)


def check_chunked_against_full_logits(folder: Path, singles: list[dict[str, torch.Tensor]], device: str) -> None:
    """`packed_sft_loss` (the SFT step) and `packed_token_nll` (RL, Tinker) through the chunked head, chunks of 16
    tokens over a ~300-token row, against the plain cross entropy over the full logits (chunk 0)."""
    model, precision = _load(folder, device, attention="auto")
    batch = _packed(model, singles, device)
    tokens = local_loss_tokens([batch])
    weights = packed_token_weights(batch)
    bounds = _bounds(device)

    def plain() -> torch.Tensor:  # written out: full logits, fp32 cross entropy, weighted sum over the step tokens
        logits = packed_logits(model, batch).float()
        nll = torch.nn.functional.cross_entropy(logits[0], batch.labels[0], ignore_index=IGNORE_INDEX, reduction="none")
        return (nll * weights[0]).sum() / tokens

    want_loss, want_grads = _loss_and_grads(model, plain, precision)
    for chunked in (
        lambda: packed_sft_loss(model, batch, tokens, 16),
        lambda: (packed_token_nll(model, batch, 16) * weights).sum() / tokens,
    ):
        loss, grads = _loss_and_grads(model, chunked, precision)
        bounds.check_nll(loss.view(1), want_loss.view(1), "loss")
        bounds.check_grads(grads, want_grads)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3"])
@pytest.mark.parametrize("device", DEVICES)
def test_chunked_cross_entropy_equals_the_full_logits_loss(
    family: str,
    device: str,
    tiny_model_dir: Callable[[str], Path],
    single_inputs: Callable[..., list[dict[str, torch.Tensor]]],
) -> None:
    check_chunked_against_full_logits(tiny_model_dir(family), single_inputs(family, CONVERSATIONS), device)


def check_weight_update(folder: Path, singles: list[dict[str, torch.Tensor]], device: str, tmp_path: Path) -> None:
    """Train one step on the device, checkpoint it as the trainer does, apply it as the server does."""
    model, precision = _load(folder, device, attention="auto")
    batch = _packed(model, singles, device)
    tokens = local_loss_tokens([batch])
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    before, _ = _loss_and_grads(model, lambda: packed_sft_loss(model, batch, tokens, 16), precision)
    optimizer.step()
    with torch.no_grad(), precision.autocast():
        after = packed_sft_loss(model, batch, tokens, 16).float()
    assert float(after) < float(before)  # the step on the device trained

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device(device))
    checkpoint = Checkpointer(tmp_path, CheckpointConfig(), context).save(
        model, AutoProcessor.from_pretrained(folder), optimizer, scheduler, TrainingState(step=1)
    )
    config = ModelConfig(name_or_path=str(folder), dtype=_dtype(device))
    served = load_model(config, str(folder), torch.device(device), training=False)
    served.eval()
    stale = {name: tensor.clone() for name, tensor in served.state_dict().items()}
    apply_update(served, matched_update(served, read_checkpoint(checkpoint)))

    trained = model.state_dict()
    changed = [name for name, tensor in served.state_dict().items() if not torch.equal(tensor, stale[name])]
    assert changed, "the update changed no served tensor"
    for name, tensor in served.state_dict().items():
        assert tensor.device.type == device and torch.equal(tensor, trained[name].to(tensor.dtype)), name
    model.eval()
    set_attention(model, "sdpa")
    x = {name: value.to(torch.device(device)) for name, value in singles[0].items()}
    with torch.no_grad(), precision.autocast():
        torch.testing.assert_close(served(**x, use_cache=False).logits, model(**x, use_cache=False).logits)


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_trained_on_the_device_is_served_exactly_after_the_weight_update(
    device: str,
    tiny_model_dir: Callable[[str], Path],
    single_inputs: Callable[..., list[dict[str, torch.Tensor]]],
    tmp_path: Path,
) -> None:
    check_weight_update(tiny_model_dir("qwen2_5_vl"), single_inputs("qwen2_5_vl", CONVERSATIONS), device, tmp_path)
