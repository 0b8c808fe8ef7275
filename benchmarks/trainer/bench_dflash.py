"""DFlash draft training on a Qwen2.5-VL-3B-shaped random target: training tokens/s, acceptance length, speedup.

    PYTHONPATH=packages/configs/src:packages/renderers/src:packages/verifiers/src:packages/trainer/src \
        python3 benchmarks/trainer/bench_dflash.py [--out FILE]     # CUDA
    python benchmarks/trainer/bench_dflash.py --tiny                  # CPU smoke run: toy dims, a few steps

The target is built from config (no download): `Qwen2_5_VLConfig` with Qwen/Qwen2.5-VL-3B-Instruct's
dimensions (those of `bench_gpu_sft.py`: text 2048 wide, 36 layers, 16/2 heads, MLP 11008, vocab 151936,
tied embeddings; 32-layer vision tower), random weights in bf16, sdpa, frozen. The draft is DFlash's shape for
it: 5 layers as wide as the target, reading target layers 1, 9, 17, 25, 33, blocks of 16, loss decay gamma 7,
fp32 weights under bf16 autocast, fused AdamW (as `foveal.trainer.training.optim.build_optimizer` picks on CUDA).

Data (seeded): prompts of random text tokens, 64-256 long, half of them with one 448x448 image (32x32 patches,
256 placeholders between vision start/end); the target regenerates each response greedily (`--new-tokens`),
as `foveal dflash` does (self-distillation), `--generate-batch-size` prompts per `generate`; the same first
batch of prompts is also answered one prompt at a time, and the ratio of the two times is reported. A step
packs `--samples-per-step` samples into rows of at most `--micro-batch-tokens` (`plan_micro_batches` +
`collate_packed`, 3-D rope positions per sample), captures the target's features of each row, and trains the
draft on random anchors of the responses. Training tokens/s =
packed tokens / wall time of the measured steps (target forward + draft forward/backward + optimizer).
Acceptance is simulated greedy speculative decoding on held-out prompts (`foveal.trainer.dflash.speculate`),
before training (the baseline: an untrained draft) and after.

A random-weight target's greedy output is degenerate (it loops on a few tokens), so acceptance here says that
the machinery learns the target's continuations, not what a real 3B model's draft would reach; the throughput
figures are the point. Imports torch, transformers, safetensors, pydantic and Foveal's dflash, data and model
modules only (no orjson, xxhash, msgpack or tomli_w).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

from foveal.trainer.data.collate import PackSample, collate_packed, pack_item
from foveal.trainer.data.packing import plan_micro_batches
from foveal.trainer.dflash.blocks import default_target_layer_ids, plan_blocks, text_positions
from foveal.trainer.dflash.draft import DFlashDraft, DraftSpec
from foveal.trainer.dflash.loss import block_loss
from foveal.trainer.dflash.regenerate import generation_batches
from foveal.trainer.dflash.speculate import eval_sequences, evaluate
from foveal.trainer.dflash.target import FrozenTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_sft import REAL, TINY, Shape  # noqa: E402
from trainer_report import Column, base_parser, emit, fixed, format_table, ratio  # noqa: E402

NAME = "dflash"
EMBED, HEAD = "model.language_model.embed_tokens.weight", "lm_head.weight"


def build_target(shape: Shape, device: torch.device, dtype: torch.dtype, draft_layers: int) -> FrozenTarget:
    config = Qwen2_5_VLConfig(text_config=shape.text, vision_config=shape.vision, tie_word_embeddings=True, **shape.ids)
    config.text_config.pad_token_id = shape.pad_id
    torch.manual_seed(0)
    with device:
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model = model.to(device)
    layers = default_target_layer_ids(shape.text["num_hidden_layers"], draft_layers)
    return FrozenTarget.wrap(model, layers, EMBED, HEAD)


def draft_for(target: FrozenTarget, shape: Shape, layers: int, block_size: int) -> DFlashDraft:
    text = shape.text
    spec = DraftSpec(
        hidden_size=text["hidden_size"],
        num_layers=layers,
        num_attention_heads=text["num_attention_heads"],
        num_key_value_heads=text["num_key_value_heads"],
        head_dim=text["hidden_size"] // text["num_attention_heads"],
        intermediate_size=text["intermediate_size"],
        rope_theta=text["rope_parameters"]["rope_theta"],
        rms_norm_eps=1e-6,
        block_size=block_size,
        target_layer_ids=target.layer_ids,
        embed_weight=EMBED,
        lm_head_weight=HEAD,
    )
    return DFlashDraft(spec, mask_embedding=target.weights.embed.float().mean(0)).to(target.device)


def draw_prompt(shape: Shape, index: int, generator: torch.Generator, image_side: int) -> PackSample:
    """Random text tokens; every other prompt carries one image (placeholders between vision start/end)."""
    text_length = int(torch.randint(64, 257, (1,), generator=generator))
    if index % 2:
        tokens = torch.randint(0, shape.text_vocab, (text_length,), generator=generator)
        return PackSample(f"p{index}", tokens, torch.zeros(text_length))
    merge = shape.vision["spatial_merge_size"]
    placeholders = image_side**2 // merge**2
    length = text_length + placeholders + 2  # the text, plus the image between its start and end tokens
    tokens = torch.randint(0, shape.text_vocab, (length,), generator=generator)
    tokens[8] = shape.ids["vision_start_token_id"]
    tokens[9 : 9 + placeholders] = shape.ids["image_token_id"]
    tokens[9 + placeholders] = shape.ids["vision_end_token_id"]
    width = 3 * shape.vision["temporal_patch_size"] * shape.vision["patch_size"] ** 2
    pixels = torch.randn(image_side**2, width, generator=generator)
    grid = torch.tensor([[1, image_side, image_side]])
    images = {"pixel_values": pixels, "image_grid_thw": grid}
    return PackSample(f"p{index}", tokens, torch.zeros(length), pixel_kwargs=images)


def with_responses(
    target: FrozenTarget, prompts: Sequence[PackSample], new_tokens: int, batch: int
) -> list[PackSample]:
    """The prompts with the target's greedy responses, `batch` prompts per `generate` (as `foveal dflash` does)."""
    samples = []
    for indices in generation_batches(len(prompts), batch):
        chosen = [prompts[i] for i in indices]
        responses = target.greedy_continuations(chosen, new_tokens, stop_ids=())
        samples.extend(with_response(p, r) for p, r in zip(chosen, responses, strict=True))
    return samples


def generation_ratio(
    target: FrozenTarget, prompts: Sequence[PackSample], new_tokens: int, batch: int
) -> dict[str, Any]:
    """Seconds to answer the same prompts one at a time (the baseline) and `batch` per `generate`."""
    seconds = []
    for size in (1, batch):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        clock = time.perf_counter()
        with_responses(target, prompts, new_tokens, size)  # .tolist() inside synchronizes
        seconds.append(time.perf_counter() - clock)
    return {"prompts": len(prompts), "batch": batch, "one_at_a_time_s": seconds[0], "batched_s": seconds[1],
            "speedup": seconds[0] / seconds[1]}  # fmt: skip


def with_response(prompt: PackSample, response: Sequence[int]) -> PackSample:
    ids = torch.cat([torch.as_tensor(prompt.token_ids), torch.tensor(response, dtype=torch.long)])
    weights = torch.cat([torch.zeros(len(prompt.token_ids)), torch.ones(len(response))])
    return PackSample(prompt.sample_id, ids, weights, pixel_kwargs=prompt.pixel_kwargs)


def train_step(
    draft: DFlashDraft,
    target: FrozenTarget,
    optimizer: torch.optim.Optimizer,
    samples: Sequence[PackSample],
    args: Any,
    generator: torch.Generator,
    autocast: Any,
) -> tuple[float, int, int]:
    """One optimizer step over `samples`; returns (loss, packed tokens, supervised positions)."""
    items = [pack_item(s) for s in samples]
    plan = plan_micro_batches(items, args.micro_batch_tokens)
    rows = [collate_packed([samples[i] for i in row], target.positions) for row in plan]
    plans = [plan_blocks(row, args.block_size, args.anchors_per_sample, 7.0, generator) for row in rows]
    total = sum(float(plan.weights.sum()) for plan in plans)
    optimizer.zero_grad(set_to_none=True)
    loss, supervised = 0.0, 0
    for row, blocks in zip(rows, plans, strict=True):
        row = row.to(target.device)
        with autocast:
            features = target.capture(row)
            blocks = blocks.to(target.device)
            term = block_loss(draft, target.weights, features, text_positions(row), blocks, total, 256)
        term.loss.backward()
        loss, supervised = loss + term.loss.item(), supervised + term.supervised
    torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0, foreach=True)
    optimizer.step()
    return loss, sum(row.num_tokens for row in rows), supervised


def run(args: Any) -> dict[str, Any]:
    on_cuda = torch.cuda.is_available() and not args.tiny
    if not args.tiny and not on_cuda:
        raise SystemExit("bench_dflash: no CUDA device; run with --tiny for the CPU smoke run")
    device = torch.device("cuda" if on_cuda else "cpu")
    if args.tiny:
        torch.set_num_threads(1)
    shape = TINY if args.tiny else REAL
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    started = time.perf_counter()
    target = build_target(shape, device, torch.bfloat16 if on_cuda else torch.float32, args.draft_layers)
    draft = draft_for(target, shape, args.draft_layers, args.block_size)
    built = time.perf_counter() - started

    generator = torch.Generator().manual_seed(args.seed)
    image_side = 8 if args.tiny else 32
    prompts = [draw_prompt(shape, i, generator, image_side) for i in range(args.train_prompts + args.eval_prompts)]
    started = time.perf_counter()
    with autocast:
        train = with_responses(target, prompts[: args.train_prompts], args.new_tokens, args.generate_batch_size)
        held_out = eval_sequences(target, prompts[args.train_prompts :], args.new_tokens, (), args.generate_batch_size)
        before = evaluate(draft, target.weights, held_out, args.block_size)
        generation_s = time.perf_counter() - started
        first_batch = prompts[: args.generate_batch_size]
        generation = generation_ratio(target, first_batch, args.new_tokens, args.generate_batch_size)

    # As foveal.trainer.training.optim.build_optimizer (not imported: it pulls in foveal.configs and tomli_w).
    fused, foreach = (True, None) if on_cuda else (None, True)
    optimizer = torch.optim.AdamW(draft.parameters(), lr=args.lr, fused=fused, foreach=foreach)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, tokens, losses = [], 0, []
    for step in range(args.warmup + args.steps):
        picks = torch.randint(0, len(train), (args.samples_per_step,), generator=generator).tolist()
        if on_cuda:
            torch.cuda.synchronize(device)
        clock = time.perf_counter()
        loss, packed, _ = train_step(draft, target, optimizer, [train[i] for i in picks], args, generator, autocast)
        elapsed = time.perf_counter() - clock  # loss.item() synchronized the step
        losses.append(loss)
        if step >= args.warmup:
            times.append(elapsed)
            tokens += packed
    with autocast:
        after = evaluate(draft, target.weights, held_out, args.block_size)

    params = sum(p.numel() for p in target.model.parameters())
    vision = sum(p.numel() for p in target.model.model.visual.parameters())
    settings = {
        "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "tiny": args.tiny,
        "target_params": params,
        "target_text_params": params - vision,
        "target_shape": {k: shape.text[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "num_key_value_heads", "intermediate_size", "vocab_size")},
        "draft_params": sum(p.numel() for p in draft.parameters()),
        "draft": {"layers": args.draft_layers, "target_layer_ids": list(target.layer_ids),
                  "block_size": args.block_size},
        "samples_per_step": args.samples_per_step,
        "micro_batch_tokens": args.micro_batch_tokens,
        "train_prompts": args.train_prompts,
        "eval_prompts": args.eval_prompts,
        "new_tokens": args.new_tokens,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "build_s": built,
        "generation_s": generation_s,
        "generate_batch_size": args.generate_batch_size,
    }  # fmt: skip
    seconds = sum(times)
    training = {
        "tokens_per_s": tokens / seconds,
        "step_s_mean": seconds / len(times),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else None,
    }
    rows = [
        {"draft": "untrained (baseline)", **asdict(before)},
        {"draft": f"trained ({args.warmup + args.steps} steps)", **asdict(after)},
    ]
    summary = {
        "baseline": "the same draft before training, on the same held-out prompts and target continuations",
        "acceptance_gain": after.acceptance_length / before.acceptance_length,
    }
    return {"settings": settings, "training": training, "generation": generation, "rows": rows, "summary": summary}


COLUMNS = (
    Column("draft", "draft"),
    Column("samples", "prompts"),
    Column("generated", "tokens"),
    Column("target_forwards", "target forwards"),
    Column("acceptance_length", "acceptance length", fixed(2)),
    Column("speedup", "simulated speedup", ratio),
)


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy dims on CPU, a few steps")
    parser.add_argument("--draft-layers", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--anchors-per-sample", type=int, default=64)
    parser.add_argument("--samples-per-step", type=int, default=None, help="samples per step (32; --tiny 8)")
    parser.add_argument("--micro-batch-tokens", type=int, default=None, help="packed row budget (8192; --tiny 1024)")
    parser.add_argument("--train-prompts", type=int, default=None, help="prompts whose responses train (64; --tiny 8)")
    parser.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts (8; --tiny 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="response length (64; --tiny 16)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured first steps (3; --tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (40; --tiny 2)")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--generate-batch-size", type=int, default=8, help="prompts per batched generate")
    args = parser.parse_args(argv)
    defaults = {"samples_per_step": (8, 32), "micro_batch_tokens": (1024, 8192), "train_prompts": (8, 64),
                "eval_prompts": (2, 8), "new_tokens": (16, 64), "warmup": (1, 3), "steps": (2, 40)}  # fmt: skip
    for name, (tiny, real) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else real)
    body = run(args)
    s, t, g = body["settings"], body["training"], body["generation"]
    peak = "-" if t["peak_memory_gib"] is None else f"{t['peak_memory_gib']:.1f} GiB"
    header = (
        f"{s['device']}: target {s['target_params']:,} params ({s['target_text_params']:,} text; "
        f"{s['target_shape']}), draft {s['draft_params']:,} params {s['draft']}\n"
        f"training: {t['tokens_per_s']:,.0f} tokens/s, {t['step_s_mean']:.3f} s/step "
        f"({s['samples_per_step']} samples/step, rows of <= {s['micro_batch_tokens']} tokens), loss "
        f"{t['loss_first']:.3f} -> {t['loss_last']:.3f}, peak {peak}; responses generated in "
        f"{s['generation_s']:.1f} s\n"
        f"regeneration: {g['prompts']} prompts, {g['batch']} per generate {g['batched_s']:.2f} s vs one at a time "
        f"{g['one_at_a_time_s']:.2f} s (the baseline): {g['speedup']:.2f}x\n"
    )
    return emit(NAME, __file__, argv, args.out, body, header + format_table(body["rows"], COLUMNS))


if __name__ == "__main__":
    main()
