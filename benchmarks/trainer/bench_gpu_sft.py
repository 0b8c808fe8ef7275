"""SFT throughput of packed micro-batches vs a padded baseline, on a Qwen2.5-VL-3B-shaped random model.

    PYTHONPATH=packages/configs/src:packages/renderers/src:packages/verifiers/src:packages/trainer/src \
        python3 benchmarks/trainer/bench_gpu_sft.py [--out FILE]    # CUDA: 3 warm-up + 8 measured steps/mode
    python benchmarks/trainer/bench_gpu_sft.py --tiny                   # CPU smoke run: toy dims, 1 + 1 steps

The model is built from config (no download): `Qwen2_5_VLConfig` with the dimensions of
Qwen/Qwen2.5-VL-3B-Instruct's config.json (3.75e9 parameters, 0.67e9 of them in the vision tower),
random weights in bf16 (what `[model].dtype = "auto"` loads for that checkpoint), fused AdamW
(`foveal.trainer.training.optim.build_optimizer`'s choice on CUDA), bf16 autocast and an fp32 loss, as `foveal sft`
runs on CUDA. Each mode sets the attention kernel, activation checkpointing (`[model].activation_checkpointing`,
every layer unless a variant says otherwise) and RMSNorm/SwiGLU kernels (`[model].kernels`) on the same model;
packed modes compute the loss through the chunked LM head (`[trainer].loss_chunk_tokens`, 1,024) as `foveal sft`
does, the padded baseline from full logits.

Every sample: a length drawn uniformly from 512-4096 tokens, one 448x448 image (32x32 patches, 256
placeholder tokens) framed by vision start/end, loss on its second half. Each mode trains on the same
seeded samples, `--samples-per-step` per optimizer step, in one process:
  - padded (baseline): micro-batches of 4 samples padded to the longest, 2-D attention mask, HF's usual path;
  - packed sdpa-N: `plan_micro_batches` bins of at most N tokens, each collated into one row
    (`collate_packed`), run through `packed_logits` (boundaries from the position row, see
    `foveal.trainer.model.attention`) and `sft_loss`. N = 16384 is the padded batch's slot budget (4 x 4096);
    N = 4096 holds one longest sample. Both are measured because under sdpa a packed row attends through a
    block-diagonal boolean mask over the whole row, whose cost grows with the row length squared;
  - packed flex-N: the same rows with `[model].attn_implementation = "flex_attention"` (the text model on
    torch's compiled flex attention with a document BlockMask, the vision tower on sdpa), switched on the
    same model with `set_attn_implementation`. `packed_logits` pads each flex row to a multiple of
    `--flex-bucket` tokens (`[model].flex_bucket_tokens`, default 2048; see
    `foveal.trainer.model.flex_padding`), so flex compiles once per bucket length, at most N / bucket times;
    `bucket_padding` is the share of the flex rows' tokens that padding adds. Compilation happens in the
    warm-up steps (`warmup_s` in the JSON): give enough of them to meet every bucket length, or a measured
    step pays a compile. On CPU (--tiny) flex has no backward, so its rows there run forward and loss only
    (`backward`);
  - packed varlen-N: the same rows with `[model].attn_implementation = "varlen"` (`foveal.trainer.model.varlen`:
    one `varlen_attn` call per layer over the row's samples, and one per vision layer over all windows instead
    of the per-window loop), set with `foveal.trainer.model.attention.set_attention`. No padding, no compile.
Useful tokens = the samples' own tokens (no padding). MFU = 6 * params * useful tokens / step time / peak
(model FLOPs: neither the checkpointing recompute nor attention is counted), against both the spec peak
(989e12 bf16 dense FLOP/s, H100/H200 SXM) and the bf16 matmul rate this script measures. Step time covers
host-to-device copies, forward, backward, clipping and the optimizer step; collation happens before the clock
starts (in the trainer its prefetch thread does it).

`--variants ATTENTION:BUDGET[:ckptK][:liger][:ceN][:rl]` adds packed modes with other settings, e.g.
`varlen:16384:ckpt2:liger` (every second layer checkpointed, liger's kernels) or `...:rl` (the RL trainer's
importance-sampling loss with log-probabilities and entropy from the chunked head, on the same rows given seeded
sampler log-probabilities and advantages). MFU (model FLOPs) counts what the model computes once, honestly:
6 x text params per text token + 6 x vision params per image patch + attention (`model_flops`), against the spec.
`first_step_s` is a mode's first step, compile included.

Imports torch, transformers, pydantic (through foveal.configs) and liger-kernel when a mode asks for it; carry
the wheels `benchmarks/trainer/gpu_wheels.sh` downloads to a bare CUDA machine (see benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

from foveal.trainer.data.adapters import concat_pixel_kwargs
from foveal.trainer.data.collate import IGNORE_INDEX, PackedBatch, PackSample, collate_packed
from foveal.trainer.data.packing import PackItem, plan_micro_batches
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.configs.trainer import LossConfig
from foveal.trainer.rl.loss import rl_nll_loss
from foveal.trainer.training.chunked_ce import packed_sft_loss, packed_token_scores
from foveal.trainer.training.loss import local_loss_tokens, micro_batch_loss
from foveal.trainer.model.attention import set_attention
from foveal.trainer.model.checkpointing import set_activation_checkpointing
from foveal.trainer.model.fused_kernels import apply_kernels
from foveal.trainer.model.flex_padding import DEFAULT_BUCKET, bucket_length, set_flex_bucket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_report import (  # noqa: E402
    Column,
    base_parser,
    command_line,
    emit,
    environment,
    fixed,
    format_table,
    percent,
    ratio,
    write_result,
)

NAME = "gpu_sft"
SPEC_PEAK_BF16 = 989e12
"""H100/H200 SXM dense bf16 tensor-core peak (NVIDIA datasheets), FLOP/s."""

# Qwen/Qwen2.5-VL-3B-Instruct config.json (text and vision dims, token ids); rope as transformers 5.x spells it.
QWEN25_VL_3B_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
QWEN25_VL_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
QWEN25_VL_3B_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
QWEN25_PAD_ID = 151643  # <|endoftext|>: the pad token, the first special id above the text vocabulary

# --tiny: the same classes at toy size (shapes as foveal.trainer.tiny_models), for a CPU smoke run.
TINY_TEXT = {
    **QWEN25_VL_3B_TEXT,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "bos_token_id": 1004,
    "eos_token_id": 1005,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
}
TINY_IDS = {"image_token_id": 1000, "video_token_id": 1001, "vision_start_token_id": 1002, "vision_end_token_id": 1003}
TINY_PAD_ID = 1004
TINY_VISION = {
    **QWEN25_VL_3B_VISION,
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
}


@dataclass(frozen=True)
class Shape:
    """Model dims and the sample mix of one run (the real 3B one, or --tiny)."""

    text: dict[str, Any]
    vision: dict[str, Any]
    ids: dict[str, int]
    pad_id: int
    text_vocab: int
    """Text tokens are drawn below this id, under every special token."""
    min_len: int
    max_len: int
    image_side_patches: int
    """The image is side x side patches (448 px / 14 = 32 for the real run)."""

    @property
    def placeholders(self) -> int:
        merge = self.vision["spatial_merge_size"]
        return self.image_side_patches**2 // merge**2

    @property
    def patch_width(self) -> int:
        v = self.vision
        return v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2


REAL = Shape(QWEN25_VL_3B_TEXT, QWEN25_VL_3B_VISION, QWEN25_VL_3B_IDS, QWEN25_PAD_ID, 151643, 512, 4096, 32)
TINY = Shape(TINY_TEXT, TINY_VISION, TINY_IDS, TINY_PAD_ID, 1000, 64, 256, 8)
PADDED_BATCH = 4
LOSS_CHUNK = 1024  # `[trainer].loss_chunk_tokens`' default
RL_LOSS = LossConfig(kind="importance_sampling")  # the RL trainer's default objective
SDPA, FLEX, VARLEN = "sdpa", "flex_attention", "varlen"


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    config = Qwen2_5_VLConfig(text_config=shape.text, vision_config=shape.vision, tie_word_embeddings=True, **shape.ids)
    config.use_cache = False
    torch.manual_seed(0)
    with device:  # initialize directly on the device: a 3.75e9-parameter init on the host takes minutes
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).train()  # a no-op unless from_config placed some tensors elsewhere


@dataclass(frozen=True)
class FlopCounts:
    """What the model-FLOPs count needs from the model: parameters and attention widths per tower."""

    text_params: int
    vision_params: int
    text_layers: int
    text_width: int
    """Query heads x head dim of a text layer."""
    vision_width: int
    window_layers: int
    full_layers: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopCounts:
        text, vision = model.config.text_config, model.config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        vision_params = sum(p.numel() for p in model.model.visual.parameters())
        full = len(vision.fullatt_block_indexes)
        return cls(
            sum(p.numel() for p in model.parameters()) - vision_params,
            vision_params,
            text.num_hidden_layers,
            text.num_attention_heads * head_dim,
            vision.hidden_size,
            vision.depth - full,
            full,
        )


def model_flops(shape: Shape, counts: FlopCounts, length: int) -> float:
    """Training FLOPs of one sample counted from the model (backward = 2 x forward; no checkpointing recompute):
    6 x text params per text token, 6 x vision params per image patch, and attention: per text layer
    6 x s^2 x width (QK^T and AV, 2 s^2 width FLOPs each over the causal half), per vision layer 12 x w^2 x width
    for each window of w patches (non-causal; the full-attention layers' window is the whole image)."""
    side = shape.image_side_patches
    window_side = min(side, shape.vision["window_size"] // shape.vision["patch_size"])
    windows, window = math.ceil(side / window_side) ** 2, window_side**2
    patches = side**2
    text_attention = counts.text_layers * 6 * length**2 * counts.text_width
    vision_layers = counts.window_layers * windows * window**2 + counts.full_layers * patches**2
    vision_attention = 12 * counts.vision_width * vision_layers
    return 6 * counts.text_params * length + 6 * counts.vision_params * patches + text_attention + vision_attention


def draw_samples(shape: Shape, count: int, seed: int) -> list[PackSample]:
    """`count` seeded samples: text, one image's placeholders between vision start/end, loss on the second half."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.tensor([[1, shape.image_side_patches, shape.image_side_patches]])
    samples = []
    for index in range(count):
        length = int(torch.randint(shape.min_len, shape.max_len + 1, (1,), generator=generator))
        tokens = torch.randint(0, shape.text_vocab, (length,), generator=generator)
        start = 16
        tokens[start] = shape.ids["vision_start_token_id"]
        tokens[start + 1 : start + 1 + shape.placeholders] = shape.ids["image_token_id"]
        tokens[start + 1 + shape.placeholders] = shape.ids["vision_end_token_id"]
        weights = (torch.arange(length) >= length // 2).float()
        pixels = torch.randn(shape.image_side_patches**2, shape.patch_width, generator=generator)
        images = {"pixel_values": pixels, "image_grid_thw": grid}
        samples.append(PackSample(f"s{seed}-{index}", tokens, weights, pixel_kwargs=images))
    return samples


@dataclass(frozen=True)
class PaddedBatch:
    """The baseline's micro-batch: B rows padded to the longest, with a 2-D attention mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    """[4, B, L]: each sample's own text + mrope rows (the same `PositionScheme` as packing), 0 at padding."""
    labels: torch.Tensor
    loss_weights: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    def to(self, device: torch.device) -> PaddedBatch:
        return PaddedBatch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))

    @property
    def slots(self) -> int:
        return self.input_ids.numel()


def collate_padded(samples: Sequence[PackSample], positions: PositionScheme, pad_id: int) -> PaddedBatch:
    longest = max(len(s.token_ids) for s in samples)
    rows = len(samples)
    ids = torch.full((rows, longest), pad_id, dtype=torch.long)
    mask = torch.zeros(rows, longest, dtype=torch.long)
    labels = torch.full((rows, longest), IGNORE_INDEX, dtype=torch.long)
    weights = torch.zeros(rows, longest)
    pos = None
    for row, s in enumerate(samples):
        n = len(s.token_ids)
        ids[row, :n], mask[row, :n] = s.token_ids, 1
        labels[row, : n - 1], weights[row, : n - 1] = s.token_ids[1:], s.loss_weights[1:]
        own = positions.sample_positions(s.sample_id, s.token_ids, s.pixel_kwargs)
        pos = torch.zeros(own.shape[0], rows, longest, dtype=torch.long) if pos is None else pos
        pos[:, row, :n] = own
    images = concat_pixel_kwargs([s.pixel_kwargs for s in samples])
    pixels, grids = images["pixel_values"], images["image_grid_thw"]
    return PaddedBatch(ids, mask, pos, labels, weights, pixels, grids)  # type: ignore[arg-type]


def padded_loss(model: torch.nn.Module, batch: PaddedBatch, loss_tokens: int) -> torch.Tensor:
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
        use_cache=False,
    ).logits
    return micro_batch_loss(logits, batch.labels, batch.loss_weights, loss_tokens)


@dataclass(frozen=True)
class Mode:
    """How one run turns a step's samples into micro-batches, and a micro-batch into its loss term."""

    name: str
    collate: Callable[[Sequence[PackSample], PositionScheme], list[Any]]
    loss: Callable[[torch.nn.Module, Any, int], torch.Tensor]
    attention: str = SDPA
    """`[model].attn_implementation` of this mode."""
    checkpointing: int = 1
    """`[model].activation_checkpointing`: every k-th layer recomputed (1 all, 0 none)."""
    kernels: str = "torch"
    """`[model].kernels`: torch (the model's own RMSNorm/SwiGLU) or liger."""


def padded_mode(pad_id: int) -> Mode:
    def collate(samples: Sequence[PackSample], positions: PositionScheme) -> list[PaddedBatch]:
        batches = [samples[i : i + PADDED_BATCH] for i in range(0, len(samples), PADDED_BATCH)]
        return [collate_padded(batch, positions, pad_id) for batch in batches]

    return Mode(f"padded (batch {PADDED_BATCH})", collate, padded_loss)


def packed_mode(
    budget: int,
    attention: str = SDPA,
    checkpointing: int = 1,
    kernels: str = "torch",
    chunk: int = LOSS_CHUNK,
    rl: bool = False,
) -> Mode:
    def collate(samples: Sequence[PackSample], positions: PositionScheme) -> list[PackedBatch]:
        samples = [with_rollout_fields(sample) for sample in samples] if rl else samples
        items = [PackItem(s.sample_id, len(s.token_ids), True) for s in samples]
        return [collate_packed([samples[i] for i in row], positions) for row in plan_micro_batches(items, budget)]

    def loss(model: torch.nn.Module, batch: PackedBatch, loss_tokens: int) -> torch.Tensor:
        if rl:  # the RL trainer's step: log-probabilities and entropy from the chunked head, then the RL loss
            scores = packed_token_scores(model, batch, chunk)
            return rl_nll_loss(scores.nll, batch, loss_tokens, RL_LOSS, entropy=scores.entropy).loss
        return packed_sft_loss(model, batch, loss_tokens, chunk)

    kernel = "flex" if attention == FLEX else attention
    extras = [f"ckpt {checkpointing}" if checkpointing != 1 else "", kernels if kernels != "torch" else ""]
    extras += [f"ce {chunk}" if chunk != LOSS_CHUNK else "", "RL loss" if rl else ""]
    label = ", ".join([f"{budget} tokens/row", *filter(None, extras)])
    return Mode(f"packed {kernel} ({label})", collate, loss, attention, checkpointing, kernels)


def parse_variant(spec: str) -> Mode:
    """`ATTENTION:BUDGET[:ckptK][:liger][:ceN]`, e.g. `varlen:16384:ckpt2:liger` (see --variants)."""
    attention, budget, *options = spec.split(":")
    attention = {"flex": FLEX}.get(attention, attention)
    if attention not in (SDPA, VARLEN, FLEX):
        raise SystemExit(f"--variants {spec}: attention must be sdpa, varlen or flex")
    settings: dict[str, Any] = {}
    for option in options:
        if option.startswith("ckpt"):
            settings["checkpointing"] = int(option.removeprefix("ckpt"))
        elif option == "liger":
            settings["kernels"] = "liger"
        elif option == "rl":
            settings["rl"] = True
        elif option.startswith("ce"):
            settings["chunk"] = int(option.removeprefix("ce"))
        else:
            raise SystemExit(f"--variants {spec}: unknown option {option!r} (ckptK, liger, ceN, rl)")
    return packed_mode(int(budget), attention, **settings)


def with_rollout_fields(sample: PackSample) -> PackSample:
    """The sample as a rollout: seeded sampler log-probabilities (-3..0) per token and one advantage (+-1)."""
    generator = torch.Generator().manual_seed(len(sample.token_ids))
    tokens = len(sample.token_ids)
    logprobs = -3.0 * torch.rand(tokens, generator=generator)
    advantage = 1.0 if tokens % 2 else -1.0
    return dataclasses.replace(sample, logprobs=logprobs, advantages=torch.full((tokens,), advantage))


def step_loss_tokens(micro_batches: Sequence[Any]) -> int:
    if isinstance(micro_batches[0], PackedBatch):
        return local_loss_tokens(micro_batches)
    return sum(int((batch.loss_weights > 0).sum()) for batch in micro_batches)


class Trainer:
    """The SFT step of `foveal sft` on one device: accumulate micro-batch loss terms, clip, AdamW."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        on_cuda = device.type == "cuda"
        self.model, self.device = model, device
        self.flops = FlopCounts.of(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # As build_optimizer: fused on CUDA, foreach elsewhere; as trainer.precision=auto: bf16 autocast on CUDA.
        fused, foreach = (True, None) if on_cuda else (None, True)
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5, fused=fused, foreach=foreach)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()

    def use(self, mode: Mode) -> None:
        """Switch to a mode's attention kernel (for flex: the text model's; the vision tower stays on sdpa),
        activation checkpointing and RMSNorm/SwiGLU kernels, as `load_model` sets them from `[model]`."""
        set_attention(self.model, mode.attention)
        set_activation_checkpointing(self.model, mode.checkpointing)
        apply_kernels(self.model, mode.kernels, self.device)

    def step(self, mode: Mode, micro_batches: Sequence[Any], backward: bool = True) -> float:
        """One optimizer step; with `backward=False` only the forward and loss (flex on CPU has no backward)."""
        loss_tokens = step_loss_tokens(micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for batch in micro_batches:
            batch = batch.to(self.device)
            with self.autocast, torch.set_grad_enabled(backward):
                loss = mode.loss(self.model, batch, loss_tokens)
            if backward:
                loss.backward()
            total += loss.detach()
        if backward:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
            self.optimizer.step()
        return float(total)  # synchronizes: the step is done when this returns


def run_mode(trainer: Trainer, mode: Mode, shape: Shape, args: Any, positions: PositionScheme) -> dict[str, Any]:
    device = trainer.device
    trainer.use(mode)
    backward = not (device.type == "cpu" and mode.attention == FLEX)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses, tokens, slots, padding, passes, warmup_s, flops = [], [], 0, 0, 0, 0, 0.0, 0.0
    first_step_s = None
    bucket = args.flex_bucket if mode.attention == FLEX else 0
    graphs = _compiled_graphs()
    for step in range(args.warmup + args.steps):
        samples = draw_samples(shape, args.samples_per_step, seed=args.seed * 100_003 + step)
        micro_batches = mode.collate(samples, positions)
        started = time.perf_counter()
        loss = trainer.step(mode, micro_batches, backward)
        elapsed = time.perf_counter() - started
        warmup_s += elapsed if step < args.warmup else 0.0
        first_step_s = elapsed if first_step_s is None else first_step_s
        if step >= args.warmup:
            flops += sum(model_flops(shape, trainer.flops, len(s.token_ids)) for s in samples)
            times.append(elapsed)
            losses.append(loss)
            tokens += sum(len(s.token_ids) for s in samples)
            slots += sum(_slots(batch) for batch in micro_batches)
            padding += sum(_bucket_padding(batch, bucket) for batch in micro_batches)
            passes += len(micro_batches)
    seconds = sum(times)
    return {
        "mode": mode.name,
        "attention": mode.attention,
        "backward": backward,
        "warmup_s": warmup_s,
        "first_step_s": first_step_s,
        "compiled_graphs": _compiled_graphs() - graphs,
        "steps": len(times),
        "micro_batches_per_step": passes / len(times),
        "useful_tokens": tokens,
        "token_efficiency": tokens / slots,
        "bucket_padding": padding / (slots + padding),
        "step_s_mean": statistics.mean(times),
        "step_s_median": statistics.median(times),
        "tokens_per_s": tokens / seconds,
        "model_flops_per_s": flops / seconds,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


ROW_KEYS = (
    "mode",
    "attention",
    "backward",
    "warmup_s",
    "first_step_s",
    "compiled_graphs",
    "steps",
    "micro_batches_per_step",
    "useful_tokens",
    "token_efficiency",
    "bucket_padding",
    "step_s_mean",
    "step_s_median",
    "tokens_per_s",
    "model_flops_per_s",
    "loss_first",
    "loss_last",
    "peak_memory_gib",
)
"""What `run_mode` reports; a mode that ran out of memory has them all None and an `error`."""


def _compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (flex attention and its mask builder compile per shape kind)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _slots(batch: Any) -> int:
    return batch.slots if isinstance(batch, PaddedBatch) else batch.num_tokens


def _bucket_padding(batch: Any, bucket: int) -> int:
    """Tokens `packed_logits` adds to a flex row to reach its bucket length (the model runs them, no loss)."""
    return bucket_length(batch.num_tokens, bucket) - batch.num_tokens if bucket else 0


def matmul_peak(device: torch.device, size: int, iterations: int) -> float:
    """FLOP/s of a large square bf16 matmul on the CUDA device, after warm-up."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * iterations / (time.perf_counter() - started)


def modes_of(args: Any, shape: Shape) -> Iterator[Mode]:
    yield padded_mode(shape.pad_id)
    for budget in args.packed_budgets:
        yield packed_mode(budget, SDPA)
    for budget in args.varlen_budgets:
        yield packed_mode(budget, VARLEN)
    for budget in args.flex_budgets:
        yield packed_mode(budget, FLEX)
    yield from map(parse_variant, args.variants)


def run(args: Any, save: Callable[[dict[str, Any]], None] = lambda body: None) -> dict[str, Any]:
    """All modes on one model; `save` gets the results so far after each mode (a killed run keeps them)."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    shape = TINY if args.tiny else REAL
    if args.tiny:
        torch.set_num_threads(1)  # toy tensors gain nothing from OpenMP workers, which only spin on a busy CPU
    if not args.tiny and device.type != "cuda":
        raise SystemExit("bench_gpu_sft: no CUDA device; run with --tiny for the CPU smoke run")
    if min([*args.packed_budgets, *args.varlen_budgets, *args.flex_budgets], default=shape.max_len) < shape.max_len:
        longest = shape.max_len
        raise SystemExit(f"--packed/varlen/flex-budgets: every budget must hold the longest sample, {longest}")
    on_cuda = device.type == "cuda"
    peak_measured = matmul_peak(device, 8192, 50) if on_cuda else None
    started = time.perf_counter()
    model = build_model(shape, device, torch.bfloat16 if on_cuda else torch.float32)
    set_flex_bucket(model, args.flex_bucket)
    settings = {
        "seed": args.seed,
        "tiny": args.tiny,
        "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "cuda": torch.version.cuda if on_cuda else None,
        "params": sum(p.numel() for p in model.parameters()),
        "vision_params": sum(p.numel() for p in model.model.visual.parameters()),
        "dtype": str(next(model.parameters()).dtype),
        "samples_per_step": args.samples_per_step,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "sample_tokens": [shape.min_len, shape.max_len],
        "image_placeholders": shape.placeholders,
        "padded_batch": PADDED_BATCH,
        "packed_budgets": list(args.packed_budgets),
        "varlen_budgets": list(args.varlen_budgets),
        "flex_budgets": list(args.flex_budgets),
        "flex_bucket_tokens": args.flex_bucket,
        "model_build_s": time.perf_counter() - started,
        "spec_peak_flops": SPEC_PEAK_BF16 if on_cuda else None,  # MFU means nothing for a toy model on a CPU
        "measured_matmul_peak_flops": peak_measured,
    }
    positions = position_scheme(model)
    trainer = Trainer(model, device)
    rows: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    for mode in modes_of(args, shape):
        rows.append(run_or_report_oom(trainer, mode, shape, args, positions))
        body = {"complete": False, "settings": settings, "rows": rated(rows, settings), "summary": summarize(rows)}
        save(body)
    for variant in args.profile:
        body.setdefault("profiles", []).append(profile_mode(trainer, parse_variant(variant), shape, args, positions))
        save(body)
    return {**body, "complete": True}


def run_or_report_oom(
    trainer: Trainer, mode: Mode, shape: Shape, args: Any, positions: PositionScheme
) -> dict[str, Any]:
    """One mode's row; running out of device memory is a result of that mode, not the end of the benchmark."""
    try:
        return run_mode(trainer, mode, shape, args, positions)
    except torch.cuda.OutOfMemoryError as error:
        trainer.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        row = {"mode": mode.name, "attention": mode.attention, "error": str(error).splitlines()[0]}
        return {**dict.fromkeys(ROW_KEYS), **row}


def rated(rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows with MFU against both peaks and tokens/s relative to the padded baseline (the first row)."""
    baseline = rows[0]["tokens_per_s"]
    out = []
    for row in rows:
        rate = row["tokens_per_s"] if row["backward"] else None  # a forward-only row is no training rate
        flops = None if rate is None else 6 * settings["params"] * rate
        out.append(
            {
                **row,
                "mfu_spec": _share(flops, settings["spec_peak_flops"]),
                "mfu_model_flops": _share(row["model_flops_per_s"], settings["spec_peak_flops"]),
                "mfu_measured_peak": _share(flops, settings["measured_matmul_peak_flops"]),
                "vs_padded": _share(rate, baseline),
            }
        )
    return out


def _share(value: float | None, whole: float | None) -> float | None:
    return None if value is None or not whole else value / whole


KERNEL_KINDS = (  # first match wins: flash kernels' names carry cutlass:: types, so attention comes first
    ("attention", ("flash", "fmha", "attention")),
    ("matmul", ("gemm", "cutlass", "nvjet", "xmma", "cublas", "sm90", "splitk")),
    ("fused (liger, triton)", ("triton", "rms_norm", "swiglu", "silu_mul")),
    ("optimizer + clipping", ("adam", "multi_tensor", "lpnorm")),
    ("copy / cast", ("copy", "memcpy", "memset", "fill")),  # casts are copy kernels; not "cast": "..._nocast<"
    ("elementwise / reduction", ("elementwise", "reduce", "softmax", "index", "scatter", "gather")),
)


def kernel_kind(name: str) -> str:
    """The KERNEL_KINDS entry a CUDA kernel's name falls under ("other" for none)."""
    return next((kind for kind, marks in KERNEL_KINDS if any(mark in name.lower() for mark in marks)), "other")


def profile_mode(trainer: Trainer, mode: Mode, shape: Shape, args: Any, positions: PositionScheme) -> dict[str, Any]:
    """Two unprofiled steps and one profiled step of `mode` on the same samples: GPU time by kernel kind and
    the top kernels (torch.profiler's device events only: the CPU ops that launched them carry the same time
    again), and the share of the step no kernel ran (launch, host syncs, Python), against the profiled step and
    against the unprofiled one (the profiler's own overhead lengthens the first)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    trainer.use(mode)
    samples = draw_samples(shape, args.samples_per_step, seed=args.seed * 100_003)
    micro_batches = mode.collate(samples, positions)
    trainer.step(mode, micro_batches)
    started = time.perf_counter()
    trainer.step(mode, micro_batches)
    unprofiled_s = time.perf_counter() - started
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        trainer.step(mode, micro_batches)
    step_s = time.perf_counter() - started
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    if not events and trainer.device.type == "cuda":  # a profiler that kept no device events: say so, plainly
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30)
        return {"mode": mode.name, "step_s": step_s, "error": "no device events", "table": table}
    totals: dict[str, list[float]] = {}
    for event in events:
        total = totals.setdefault(event.name, [0.0, 0])
        total[0] += event.time_range.elapsed_us() / 1e6
        total[1] += 1
    kernels = sorted(((name, sec, int(n)) for name, (sec, n) in totals.items()), key=lambda kernel: -kernel[1])
    spans = sorted((e.time_range.start, e.time_range.end) for e in events)
    busy_us, reach = 0.0, None
    for begin, end in spans:  # the union of the kernels' intervals: overlapping streams count once
        begin = begin if reach is None else max(begin, reach)
        busy_us += max(0.0, end - begin)
        reach = end if reach is None else max(reach, end)
    busy_s = busy_us / 1e6
    kinds: dict[str, float] = {}
    for name, seconds, _ in kernels:
        kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + seconds
    device_span_s = (spans[-1][1] - spans[0][0]) / 1e6 if spans else 0.0
    return {
        "mode": mode.name,
        "step_s": step_s,
        "unprofiled_step_s": unprofiled_s,
        "model_flops": sum(model_flops(shape, trainer.flops, len(s.token_ids)) for s in samples),
        "kernel_launches": len(events),
        "kernel_s": sum(seconds for _, seconds, _ in kernels),
        "busy_s": busy_s,
        "device_span_s": device_span_s,
        "idle_share": max(0.0, 1 - busy_s / step_s),
        "idle_share_unprofiled": max(0.0, 1 - busy_s / unprofiled_s),
        "by_kind_s": dict(sorted(kinds.items(), key=lambda item: -item[1])),
        "top_kernels": [{"name": name[:200], "s": seconds, "calls": count} for name, seconds, count in kernels[:25]],
        "kernels": [{"name": name[:200], "s": seconds, "calls": count} for name, seconds, count in kernels],
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    packed = [row for row in rows[1:] if row["tokens_per_s"] is not None and row["backward"]]
    best = max(packed, key=lambda row: row["tokens_per_s"]) if packed else None
    baseline = rows[0]["tokens_per_s"]
    return {
        "baseline": f"padded micro-batches of {PADDED_BATCH} (pad to longest), same samples, same process",
        "best_packed": best["mode"] if best else None,
        "best_packed_vs_padded_tokens_per_s": _share(best["tokens_per_s"], baseline) if best else None,
    }


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _error(value: str | None) -> str:
    return "" if value is None else value[:60]


COLUMNS = (
    Column("mode", "mode"),
    Column("micro_batches_per_step", "passes/step", fixed(1)),
    Column("token_efficiency", "non-pad share", percent),
    Column("bucket_padding", "bucket pad", percent),
    Column("warmup_s", "warm-up s", fixed(1)),
    Column("first_step_s", "first step s", fixed(1)),
    Column("step_s_mean", "step s", fixed(3)),
    Column("tokens_per_s", "useful tokens/s", fixed(0)),
    Column("vs_padded", "vs padded", ratio),
    Column("mfu_spec", "MFU (spec)", percent),
    Column("mfu_measured_peak", "MFU (measured peak)", percent),
    Column("mfu_model_flops", "MFU (model FLOPs)", percent),
    Column("peak_memory_gib", "peak GiB", _gib),
    Column("loss_last", "loss", fixed(3)),
    Column("error", "error", _error),
)


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy dims on CPU, 1 warm-up + 1 measured step")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per mode (default 3; --tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per mode (default 8; --tiny 1)")
    parser.add_argument("--samples-per-step", type=int, default=None, help="samples per optimizer step (16; --tiny 4)")
    parser.add_argument("--packed-budgets", type=int, nargs="*", default=None, help="tokens per packed row, sdpa")
    parser.add_argument("--varlen-budgets", type=int, nargs="*", default=None, help="tokens per packed row, varlen")
    parser.add_argument("--flex-budgets", type=int, nargs="*", default=None, help="tokens per packed row, flex")
    variants_help = "packed modes ATTENTION:BUDGET[:ckptK][:liger][:ceN][:rl]: every k-th layer checkpointed "
    variants_help += f"(default 1), liger RMSNorm/SwiGLU, loss chunk N tokens (default {LOSS_CHUNK}; 0 full logits), "
    variants_help += "the RL trainer's loss"
    parser.add_argument("--variants", nargs="*", default=[], help=variants_help)
    profile_help = "after the modes, profile one step of each variant (GPU time by kernel kind, top kernels)"
    parser.add_argument("--profile", nargs="*", default=[], metavar="VARIANT", help=profile_help)
    bucket_help = f"flex rows padded to multiples of this many tokens ({DEFAULT_BUCKET}; --tiny 256)"
    parser.add_argument("--flex-bucket", type=int, default=None, help=bucket_help)
    args = parser.parse_args(argv)
    shape = TINY if args.tiny else REAL
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.steps = args.steps if args.steps is not None else (1 if args.tiny else 8)
    args.samples_per_step = args.samples_per_step or (4 if args.tiny else 16)
    args.flex_bucket = args.flex_bucket if args.flex_bucket is not None else (256 if args.tiny else DEFAULT_BUCKET)
    budgets = [PADDED_BATCH * shape.max_len, shape.max_len]
    args.packed_budgets = budgets if args.packed_budgets is None else args.packed_budgets
    args.varlen_budgets = budgets if args.varlen_budgets is None else args.varlen_budgets
    args.flex_budgets = budgets if args.flex_budgets is None else args.flex_budgets
    command = command_line(__file__, argv)
    context = {"command": command, "environment": environment()}
    body = run(args, save=lambda partial: write_result(NAME, args.out, {**context, **partial}))
    s = body["settings"]
    header = (
        f"{s['device']}: {s['params']:,} params ({s['dtype']}), {s['samples_per_step']} samples/step, "
        f"{s['warmup_steps']} warm-up + {s['measured_steps']} measured steps per mode, model built in "
        f"{s['model_build_s']:.1f} s; flex rows padded to multiples of {s['flex_bucket_tokens']} tokens\n"
    )
    if s["spec_peak_flops"]:
        header += (
            f"bf16 matmul peak measured {s['measured_matmul_peak_flops'] / 1e12:.1f} TFLOP/s, "
            f"spec {s['spec_peak_flops'] / 1e12:.0f} TFLOP/s\n"
        )
    table = header + format_table(body["rows"], COLUMNS)
    for profile in body.get("profiles", []):
        table += "\n\n" + format_profile(profile)
    return emit(NAME, __file__, argv, args.out, body, table)


def format_profile(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"profile of one step, {profile['mode']}: {profile['error']}\n{profile['table']}"
    lines = [
        f"profile of one step, {profile['mode']}: {profile['step_s']:.3f} s wall profiled "
        f"({profile['unprofiled_step_s']:.3f} s unprofiled), {profile['kernel_launches']:,} kernels, "
        f"{profile['kernel_s']:.3f} s of kernels ({profile['busy_s']:.3f} s busy), no kernel running "
        f"{100 * profile['idle_share']:.1f}% of the profiled step, {100 * profile['idle_share_unprofiled']:.1f}% "
        f"of the unprofiled one; model FLOPs {profile['model_flops']:.3e}"
    ]
    lines += [f"  {kind:<24} {seconds:8.3f} s" for kind, seconds in profile["by_kind_s"].items()]
    lines += [f"  {k['s']:8.3f} s {k['calls']:6d}x  {k['name']}" for k in profile["top_kernels"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
