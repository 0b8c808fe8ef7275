"""Materializer images/s, and the share of the training loop's wall time spent blocked waiting for images.

    python benchmarks/trainer/bench_materialize.py [--images 32] [--batch-size 4] [--threads 2 4 8]
    PYTHONPATH=packages/configs/src:packages/renderers/src:packages/verifiers/src:packages/trainer/src \
        python3 benchmarks/trainer/bench_materialize.py ...     # outside the venv (needs pydantic and orjson)

Real PNGs (256-2048 px per side, seeded) sit in a real `ImageStore`; each sample (prompt, one image's
placeholders, answer) travels as msgpack and is decoded with `TrainingSample.from_msgpack`. Pixels come
from the real `Materializer` with the tiny Qwen2.5-VL processor at max_pixels = 1024 merged tokens.

1. Serial images/s: one thread, pixel cache off (every image read, hash-verified, decoded, processed),
   then the same images through a warm cache, and on thread pools of `--threads` sizes (cache off) through
   `materialize_share`, the function `StepStream` materializes a step's share with. `cpu/wall` is the
   process's CPU time over wall time: how many cores the threads kept busy, i.e. how much of the work ran
   with the GIL released (one thread holding the GIL throughout would read at most 1.0).
2. The loop: steps of `--batch-size` samples as `foveal sft` runs them: rows planned by `plan_step`,
   materialized, collated, then per micro-batch forward (`packed_logits`), `sft_loss`, backward, clip
   and AdamW. Data arrives either from the real `StepStream` (its `Prefetcher` prepares steps ahead in a
   background thread; a step's images are materialized by 1 thread, then by `--stream-threads`) or, as the
   baseline run in the same process, inline in the loop. Blocked time is
   measured as `run_sft` measures `data_wait_seconds`: from the end of one step to the arrival of the next
   batch. Two kinds of step: the tiny model's real step on this CPU, and a simulated accelerator step
   that sleeps `tokens / --sim-tokens-per-s` per micro-batch (by default Qwen2.5-VL-3B at 40% MFU of an
   H100/H200: 0.4 * 989e12 / (6 * 3.75e9) = 17.6k tokens/s); pass the tokens/s measured by
   bench_gpu_sft.py to use the real rate. The first step always waits for its data (nothing was
   prefetched yet): `steady` excludes it, `all` does not.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs.multimodal import MultimodalConfig
from foveal.configs.trainer import OptimConfig
from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.store import ImageStore
from foveal.renderers.tiny import TinyTokenIds
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.data.adapters import ImageAdapter, image_adapter
from foveal.trainer.data.collate import PackedBatch, collate_packed
from foveal.trainer.data.materialize import Materializer, PixelCache
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.packing import PackItem
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.data.pool import materialize_share, materialize_threads
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.distributed import init_distributed
from foveal.trainer.training.loss import local_loss_tokens, sft_loss
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.training.optim import build_optimizer, clip_gradients
from foveal.trainer.data.steps import PackingLimits, plan_step
from foveal.trainer.data.stream import StepStream, epoch_order
from foveal.trainer.tiny_models import build_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_pictures import picture  # noqa: E402
from trainer_report import Column, base_parser, emit, fixed, format_table, percent, ratio  # noqa: E402

NAME = "materialize"
MAX_PIXELS = 1024 * 28 * 28
SIM_TOKENS_PER_S = 0.4 * 989e12 / (6 * 3.75e9)
TARGET_BLOCKED_SHARE = 0.02
SHUFFLE_SEED = 0
StepFn = Callable[[Sequence[PackedBatch]], None]
"""One optimizer step over a step's micro-batches."""


@dataclass(frozen=True)
class Bench:
    """Everything the runs share: the store and its samples (as msgpack), the adapter, the model."""

    store: ImageStore
    adapter: ImageAdapter
    wire: tuple[bytes, ...]
    pixels: tuple[int, ...]
    """width * height of each sample's image."""
    model: torch.nn.Module
    positions: PositionScheme

    def materializer(self, cache: bool) -> Materializer:
        return Materializer(self.adapter, self.store, cache=None if cache else PixelCache(max_bytes=0))


class WireSource:
    """Samples as they arrive from another process: msgpack bytes, decoded when the step is prepared."""

    def __init__(self, wire: Sequence[bytes]) -> None:
        self.wire = tuple(wire)

    def __len__(self) -> int:
        return len(self.wire)

    def __getitem__(self, index: int) -> bytes:
        return self.wire[index]


def build_bench(workdir: Path, images: int, sides: tuple[int, int], seed: int, cache_root: Path | None) -> Bench:
    folder = build_tiny_model("qwen2_5_vl", cache_root)
    processor = AutoProcessor.from_pretrained(folder)
    ids = TinyTokenIds.from_folder(folder)
    adapter = image_adapter("qwen2_vl", processor, MultimodalConfig(max_pixels=MAX_PIXELS))
    store = ImageStore(workdir / "assets", MultimodalConfig(), durable=False)
    resolver = ImageResolver(store, adapter.spec)  # what the renderer stores and describes images with
    rng = np.random.default_rng(seed)
    wire, pixels = [], []
    for index in range(images):
        width, height = (int(side) for side in rng.integers(sides[0], sides[1] + 1, size=2))
        descriptor = resolver.resolve(picture(width, height, seed + index), f"images[{index}]").descriptor
        wire.append(_sample(f"mat-{index}", descriptor, ids, rng).to_msgpack())
        pixels.append(width * height)
        store.read_verified(descriptor.raw_image_uri, descriptor.hash)  # every run finds it in the page cache
    model = AutoModelForImageTextToText.from_pretrained(folder).train()
    return Bench(store, adapter, tuple(wire), tuple(pixels), model, position_scheme(model))


def _sample(
    sample_id: str, descriptor: RawImageDescriptor, ids: TinyTokenIds, rng: np.random.Generator
) -> TrainingSample:
    count = int(descriptor.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
    prompt = rng.integers(0, ids.pad_id, int(rng.lognormal(np.log(300), 0.5)) + 1).tolist()
    answer = rng.integers(0, ids.pad_id, int(rng.lognormal(np.log(200), 0.5)) + 1).tolist()
    tokens = [*prompt, ids.vision_start_id, *[ids.image_pad_id] * count, ids.vision_end_id, *answer]
    refs = build_mm_refs(tokens, [(descriptor, (len(prompt) + 1, count))], ids.image_pad_id, sample_id=sample_id)
    weights = [0.0] * (len(tokens) - len(answer)) + [1.0] * len(answer)
    return TrainingSample(sample_id=sample_id, token_ids=tokens, loss_weights=weights, mm_refs=tuple(refs))


def materialize_rate(bench: Bench, pool_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Images/s of the materializer alone: serial cold, serial warm cache, then thread pools (cold)."""
    samples = [TrainingSample.from_msgpack(data) for data in bench.wire]
    rows = []
    cold = bench.materializer(cache=False)
    times = []
    cpu = time.process_time()
    for sample in samples:
        started = time.perf_counter()
        cold.materialize(sample)
        times.append(time.perf_counter() - started)
    rows.append(_rate("serial, cache off", 1, len(samples), sum(times), time.process_time() - cpu, times))
    warm = bench.materializer(cache=True)
    for sample in samples:
        warm.materialize(sample)
    started, cpu = time.perf_counter(), time.process_time()
    for sample in samples:
        warm.materialize(sample)
    rows.append(_rate("serial, cache hits", 1, len(samples), *_since(started, cpu), None))
    for threads in pool_sizes:
        pooled = bench.materializer(cache=False)
        with ThreadPoolExecutor(threads) as pool:
            started, cpu = time.perf_counter(), time.process_time()
            materialize_share(samples, range(len(samples)), pooled.materialize, pool)
            seconds, cpu_s = _since(started, cpu)
        rows.append(_rate(f"{threads} threads, cache off", threads, len(samples), seconds, cpu_s, None))
    baseline = rows[0]["images_per_s"]
    return [{**row, "vs_serial": row["images_per_s"] / baseline} for row in rows]


def _since(started: float, cpu: float) -> tuple[float, float]:
    return time.perf_counter() - started, time.process_time() - cpu


def _rate(
    name: str, threads: int, images: int, seconds: float, cpu_s: float, times: list[float] | None
) -> dict[str, Any]:
    per_image = statistics.median(times) if times else seconds / images
    return {
        "mode": name,
        "threads": threads,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "median_ms": 1e3 * per_image,
        "cpu_per_wall": cpu_s / seconds,
    }


def model_step(bench: Bench) -> StepFn:
    """The SFT loop's optimizer step on the tiny model (CPU, fp32, as `trainer.precision=auto` runs it)."""
    optimizer = build_optimizer(bench.model, OptimConfig(lr=1e-5))

    def step(micro_batches: Sequence[PackedBatch]) -> None:
        loss_tokens = local_loss_tokens(micro_batches)
        optimizer.zero_grad(set_to_none=True)
        for micro_batch in micro_batches:
            sft_loss(packed_logits(bench.model, micro_batch), micro_batch, loss_tokens).backward()
        clip_gradients(bench.model.parameters(), 1.0)
        optimizer.step()

    return step


def simulated_step(tokens_per_s: float) -> StepFn:
    """An accelerator step: the host thread waits (GIL released) for as long as the device would compute."""

    def step(micro_batches: Sequence[PackedBatch]) -> None:
        time.sleep(sum(batch.num_tokens for batch in micro_batches) / tokens_per_s)

    return step


def inline_steps(bench: Bench, limits: PackingLimits, count: int) -> Iterator[Sequence[PackedBatch]]:
    """The baseline: each step's data prepared in the loop itself, exactly as `StepStream` prepares it."""
    materializer = bench.materializer(cache=True)
    order = epoch_order(len(bench.wire), SHUFFLE_SEED, 0)
    size = limits.batch_size
    for step in range(count):
        samples = [TrainingSample.from_msgpack(bench.wire[i]) for i in order[step * size : (step + 1) * size]]
        items = [PackItem(s.sample_id, s.num_tokens, bool(s.mm_refs)) for s in samples]
        ready = [materializer.materialize(sample) for sample in samples]
        yield [collate_packed([ready[i] for i in group], bench.positions) for group in plan_step(items, limits)]


def streamed_steps(
    bench: Bench, limits: PackingLimits, count: int, threads: int
) -> tuple[StepStream, Iterator[Sequence[PackedBatch]]]:
    """The real data stream, its steps prepared ahead in its background thread, images on `threads` threads."""
    stream = StepStream(
        WireSource(bench.wire),  # type: ignore[arg-type]  # msgpack bytes stand in for conversations
        TrainingSample.from_msgpack,  # type: ignore[arg-type]
        bench.materializer(cache=True).materialize,
        bench.positions,
        limits,
        init_distributed("cpu"),
        epochs=1,
        materialize_threads=threads,
    )
    steps = stream.steps(DataPosition(shuffle_seed=SHUFFLE_SEED), count)
    return stream, (batch.micro_batches for batch in steps)


def timed_loop(batches: Iterator[Sequence[PackedBatch]], step: StepFn) -> dict[str, Any]:
    """Run the loop; wait = end of the previous step to arrival of this step's batch (as `run_sft` logs it)."""
    waits, totals, tokens = [], [], 0
    clock = time.perf_counter()
    for micro_batches in batches:
        arrived = time.perf_counter()
        step(micro_batches)
        done = time.perf_counter()
        waits.append(arrived - clock)
        totals.append(done - clock)
        tokens += sum(batch.num_tokens for batch in micro_batches)
        clock = done
    steady_wait, steady_total = sum(waits[1:]), sum(totals[1:])
    return {
        "steps": len(waits),
        "tokens": tokens,
        "wall_s": sum(totals),
        "blocked_s": sum(waits),
        "blocked_share_all": sum(waits) / sum(totals),
        "blocked_share_steady": steady_wait / steady_total if steady_total else 0.0,
        "compute_s_per_step": statistics.mean(t - w for t, w in zip(totals, waits, strict=True)),
    }


def loop_runs(
    bench: Bench, limits: PackingLimits, steps: int, tokens_per_s: float, stream_threads: int
) -> list[dict[str, Any]]:
    rows = []
    for kind, make_step in (
        ("tiny model (CPU)", lambda: model_step(bench)),
        ("simulated accel.", lambda: simulated_step(tokens_per_s)),
    ):
        step = make_step()
        step(next(inline_steps(bench, limits, 1)))  # warm-up: first-call allocations belong to neither run
        results = [("inline (baseline)", 1, timed_loop(inline_steps(bench, limits, steps), step))]
        for threads in dict.fromkeys((1, stream_threads)):
            stream, batches = streamed_steps(bench, limits, steps, threads)
            with stream:
                result = timed_loop(batches, step)
            results.append((f"StepStream, {threads} thread{'s' * (threads > 1)}", threads, result))
        inline = results[0][2]
        for mode, threads, result in results:
            wall_vs_inline = result["wall_s"] / inline["wall_s"]
            rows.append({"step": kind, "data": mode, "threads": threads, **result, "wall_vs_inline": wall_vs_inline})
    return rows


def run(
    images: int,
    batch_size: int,
    sides: tuple[int, int],
    tokens_per_s: float,
    seed: int,
    cache_root: Path | None = None,
    pool_sizes: Sequence[int] = (2, 4, 8),
    stream_threads: int = 1,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="foveal-materialize-") as workdir:
        bench = build_bench(Path(workdir), images, sides, seed, cache_root)
        rates = materialize_rate(bench, pool_sizes)
        limits = PackingLimits(batch_size=batch_size, seq_len=4096, micro_batch_tokens=4096)
        loops = loop_runs(bench, limits, images // batch_size, tokens_per_s, stream_threads)
    samples = [TrainingSample.from_msgpack(data) for data in bench.wire]
    tokens_per_image = statistics.mean(s.num_tokens for s in samples)
    needed = tokens_per_s / tokens_per_image
    streamed = [row for row in loops if row["data"].startswith("StepStream")]
    best = max(rates, key=lambda row: row["images_per_s"] if row["mode"].endswith("cache off") else 0.0)
    summary = {
        "baseline": "serial materializer (images/s); the same loop with data prepared inline (blocked share)",
        "serial_images_per_s": rates[0]["images_per_s"],
        "best_cold_mode": best["mode"],
        "best_cold_images_per_s": best["images_per_s"],
        "images_per_s_needed_at_sim_rate": needed,
        "serial_headroom_at_sim_rate": rates[0]["images_per_s"] / needed,
        "best_cold_headroom_at_sim_rate": best["images_per_s"] / needed,
        "blocked_share_steady": {f"{row['step']}, {row['data']}": row["blocked_share_steady"] for row in streamed},
        "target_blocked_share": TARGET_BLOCKED_SHARE,
    }
    settings = {
        "seed": seed,
        "images": images,
        "image_sides": list(sides),
        "max_pixels": MAX_PIXELS,
        "batch_size": batch_size,
        "seq_len": limits.seq_len,
        "micro_batch_tokens": limits.micro_batch_tokens,
        "sim_tokens_per_s": tokens_per_s,
        "mean_image_megapixels": statistics.mean(bench.pixels) / 1e6,
        "mean_sample_tokens": tokens_per_image,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "pool_sizes": list(pool_sizes),
        "stream_threads": stream_threads,
    }
    return {"settings": settings, "rates": rates, "loops": loops, "summary": summary}


RATE_COLUMNS = (
    Column("mode", "materializer"),
    Column("images_per_s", "images/s", fixed(1)),
    Column("median_ms", "ms/image", fixed(1)),
    Column("cpu_per_wall", "cpu/wall", fixed(2)),
    Column("vs_serial", "vs serial", ratio),
)
LOOP_COLUMNS = (
    Column("step", "step"),
    Column("data", "data"),
    Column("steps", "steps"),
    Column("compute_s_per_step", "compute s/step", fixed(3)),
    Column("wall_s", "wall s", fixed(2)),
    Column("blocked_share_all", "blocked (all)", percent),
    Column("blocked_share_steady", "blocked (steady)", percent),
    Column("wall_vs_inline", "wall vs inline", ratio),
)


def main(argv: Sequence[str] | None = None, cache_root: Path | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="distinct images (one per sample)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per optimizer step")
    parser.add_argument("--sides", type=int, nargs=2, default=[256, 2048], help="min and max image side, px")
    parser.add_argument("--sim-tokens-per-s", type=float, default=SIM_TOKENS_PER_S, help="simulated device rate")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads of the tiny model's step")
    parser.add_argument("--threads", type=int, nargs="*", default=[2, 4, 8], help="materializer pool sizes to rate")
    parser.add_argument(
        "--stream-threads", type=int, default=None, help="StepStream materialize threads (default min(8, CPUs))"
    )
    args = parser.parse_args(argv)
    stream_threads = materialize_threads(args.stream_threads)
    # One thread by default: on a small shared CPU, OpenMP workers spinning beside the prefetch thread made the
    # same tiny step 2-7x slower and erratic (the test suite's conftest pins 1 thread for the same reason).
    torch.set_num_threads(args.torch_threads)
    body = run(
        args.images,
        args.batch_size,
        tuple(args.sides),
        args.sim_tokens_per_s,
        args.seed,
        cache_root,
        args.threads,
        stream_threads,
    )
    s = body["settings"]
    header = (
        f"{s['images']} images of {s['mean_image_megapixels']:.2f} Mpx mean, {s['mean_sample_tokens']:.0f} "
        f"tokens/sample, {s['batch_size']} samples/step, torch threads {s['torch_threads']}, {s['cpu_count']} CPUs\n"
    )
    summary = body["summary"]
    needed, serial = summary["images_per_s_needed_at_sim_rate"], summary["serial_images_per_s"]
    footer = (
        f"\nat {args.sim_tokens_per_s:,.0f} tokens/s the device consumes {needed:.1f} images/s; one serial "
        f"materializer thread gives {serial:.1f} ({summary['serial_headroom_at_sim_rate']:.2f}x), "
        f"{summary['best_cold_mode']} {summary['best_cold_images_per_s']:.1f} "
        f"({summary['best_cold_headroom_at_sim_rate']:.2f}x)"
    )
    table = format_table(body["rates"], RATE_COLUMNS) + "\n\n" + format_table(body["loops"], LOOP_COLUMNS) + footer
    return emit(NAME, __file__, argv, args.out, body, header + table)


if __name__ == "__main__":
    main()
