"""Packing efficiency of the trainer's planner vs padded batching, on a realistic mix of sample lengths.

    python benchmarks/trainer/bench_packing.py [--samples 8192] [--seq-lens 8192 16384 32768]

Efficiency = non-pad tokens / slots. Packed: `plan_micro_batches` (best-fit decreasing) fills rows of
`seq_len` tokens from the samples of one optimizer step; slots = rows x seq_len (a row as a fixed-shape
buffer would hold it; collate itself never pads). Padded (the baseline, same process, same samples): the
same step's samples in micro-batches of B = seq_len // 4096 samples, each padded to its longest sample
(slots = B x longest), in arrival order and, as a stronger baseline, sorted by length within the step.

The mix (seeded, every sample 64-4096 tokens): 40% SFT chat (lognormal, median 700), 25% RL rollouts
(bimodal: short answers, median 350, and long reasoning, median 2200), 35% multimodal (text median 400 plus
one image, or two for a fifth of them, of 256-2048 px per side at Qwen2.5-VL's layout capped at 1024 merged
tokens per image, so 64-1024 placeholder tokens each, computed by `foveal.renderers.layout`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foveal.renderers.layout import LayoutSpec, compute_layout
from foveal.trainer.data.packing import PackItem, plan_micro_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_report import Column, base_parser, emit, fixed, format_table, percent, ratio  # noqa: E402

NAME = "packing"
MAX_SAMPLE_TOKENS = 4096
MIN_SAMPLE_TOKENS = 64
TARGET_EFFICIENCY = 0.97
# Qwen2.5-VL's image layout (patch 14, merge 2) with max_pixels at 1024 merged tokens, a common SFT setting.
IMAGE_SPEC = LayoutSpec("qwen2_vl", 14, 2, 2, min_pixels=56 * 56, max_pixels=1024 * 28 * 28)
HEADLINE = (16384, 256)
"""(seq_len, samples per step) the summary reports against the target."""


@dataclass(frozen=True)
class Step:
    """One optimizer step's samples as the planner sees them."""

    items: tuple[PackItem, ...]

    @property
    def lengths(self) -> list[int]:
        return [item.length for item in self.items]


def draw_mix(count: int, seed: int) -> list[PackItem]:
    """`count` samples of the mix above, in arrival order."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["sft", "rl", "mm"], size=count, p=[0.40, 0.25, 0.35])
    return [_draw(str(kind), index, rng) for index, kind in enumerate(kinds)]


def _draw(kind: str, index: int, rng: np.random.Generator) -> PackItem:
    if kind == "sft":
        return PackItem(f"sft-{index}", _clip(rng.lognormal(np.log(700), 0.7)), False)
    if kind == "rl":
        median, sigma = (350, 0.5) if rng.random() < 0.6 else (2200, 0.4)
        return PackItem(f"rl-{index}", _clip(rng.lognormal(np.log(median), sigma)), False)
    images = 2 if rng.random() < 0.2 else 1
    placeholders = sum(_image_tokens(rng) for _ in range(images))
    text = int(rng.lognormal(np.log(400), 0.6))
    return PackItem(f"mm-{index}", _clip(text + placeholders, low=placeholders + 8), True)


def _image_tokens(rng: np.random.Generator) -> int:
    width, height = (int(side) for side in rng.integers(256, 2049, size=2))
    return compute_layout(IMAGE_SPEC, width, height).num_placeholder_tokens


def _clip(length: float, low: int = MIN_SAMPLE_TOKENS) -> int:
    return int(min(max(length, low), MAX_SAMPLE_TOKENS))


def steps_of(items: Sequence[PackItem], per_step: int) -> list[Step]:
    return [Step(tuple(items[i : i + per_step])) for i in range(0, len(items), per_step)]


def packed(steps: Sequence[Step], seq_len: int) -> dict[str, float]:
    """Our planner on each step: efficiency, rows per step, and planning time per step."""
    tokens = rows = 0
    started = time.perf_counter()
    for step in steps:
        plan = plan_micro_batches(step.items, seq_len)
        rows += len(plan)
        tokens += sum(step.lengths)
    seconds = time.perf_counter() - started
    return {"efficiency": tokens / (rows * seq_len), "passes": rows / len(steps), "plan_ms": 1e3 * seconds / len(steps)}


def padded(steps: Sequence[Step], seq_len: int, sort: bool) -> dict[str, float]:
    """Micro-batches of B = seq_len // 4096 samples, each padded to its longest (same slot budget per pass)."""
    per_batch = max(seq_len // MAX_SAMPLE_TOKENS, 1)
    tokens = slots = batches = 0
    for step in steps:
        lengths = sorted(step.lengths) if sort else step.lengths
        for start in range(0, len(lengths), per_batch):
            batch = lengths[start : start + per_batch]
            slots += len(batch) * max(batch)
            tokens += sum(batch)
            batches += 1
    return {"efficiency": tokens / slots, "passes": batches / len(steps)}


def run(samples: int, seq_lens: Sequence[int], step_sizes: Sequence[int], seed: int) -> dict[str, Any]:
    items = draw_mix(samples, seed)
    lengths = np.array([item.length for item in items])
    rows = []
    for seq_len in seq_lens:
        for per_step in step_sizes:
            steps = steps_of(items, per_step)
            ours, pad, pad_sorted = packed(steps, seq_len), padded(steps, seq_len, False), padded(steps, seq_len, True)
            rows.append(
                {
                    "seq_len": seq_len,
                    "samples_per_step": per_step,
                    "padded_batch": max(seq_len // MAX_SAMPLE_TOKENS, 1),
                    "packed_efficiency": ours["efficiency"],
                    "padded_efficiency": pad["efficiency"],
                    "padded_sorted_efficiency": pad_sorted["efficiency"],
                    "packed_vs_padded": ours["efficiency"] / pad["efficiency"],
                    "packed_vs_padded_sorted": ours["efficiency"] / pad_sorted["efficiency"],
                    "packed_passes_per_step": ours["passes"],
                    "padded_passes_per_step": pad["passes"],
                    "plan_ms_per_step": ours["plan_ms"],
                }
            )
    headline = next((r for r in rows if (r["seq_len"], r["samples_per_step"]) == HEADLINE), rows[-1])
    mix = {
        "samples": samples,
        "multimodal_share": float(np.mean([item.multimodal for item in items])),
        "tokens_mean": float(lengths.mean()),
        "tokens_p50": float(np.percentile(lengths, 50)),
        "tokens_p90": float(np.percentile(lengths, 90)),
        "tokens_min": int(lengths.min()),
        "tokens_max": int(lengths.max()),
    }
    summary = {
        "baseline": "padded batching of the same samples in the same process (pad to longest per micro-batch)",
        "headline": {"seq_len": headline["seq_len"], "samples_per_step": headline["samples_per_step"]},
        "packed_efficiency": headline["packed_efficiency"],
        "padded_efficiency": headline["padded_efficiency"],
        "packed_vs_padded": headline["packed_vs_padded"],
        "target_efficiency": TARGET_EFFICIENCY,
        "meets_target": headline["packed_efficiency"] >= TARGET_EFFICIENCY,
    }
    return {
        "settings": {"seed": seed, "max_sample_tokens": MAX_SAMPLE_TOKENS},
        "mix": mix,
        "rows": rows,
        "summary": summary,
    }


COLUMNS = (
    Column("seq_len", "seq_len"),
    Column("samples_per_step", "samples/step"),
    Column("packed_efficiency", "packed", percent),
    Column("padded_efficiency", "padded", percent),
    Column("padded_sorted_efficiency", "padded (sorted)", percent),
    Column("packed_vs_padded", "packed/padded", ratio),
    Column("packed_vs_padded_sorted", "packed/sorted", ratio),
    Column("packed_passes_per_step", "packed rows/step", fixed(1)),
    Column("padded_passes_per_step", "padded batches/step", fixed(1)),
    Column("plan_ms_per_step", "plan ms/step", fixed(2)),
)


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192, help="samples drawn from the mix")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[8192, 16384, 32768], help="packed row sizes")
    parser.add_argument("--step-samples", type=int, nargs="+", default=[64, 256, 1024], help="samples per step")
    args = parser.parse_args(argv)
    body = run(args.samples, args.seq_lens, args.step_samples, args.seed)
    mix = body["mix"]
    header = (
        f"{mix['samples']} samples, {percent(mix['multimodal_share'])} multimodal, tokens mean "
        f"{mix['tokens_mean']:.0f} p50 {mix['tokens_p50']:.0f} p90 {mix['tokens_p90']:.0f} max {mix['tokens_max']}\n"
    )
    return emit(NAME, __file__, argv, args.out, body, header + format_table(body["rows"], COLUMNS))


if __name__ == "__main__":
    main()
