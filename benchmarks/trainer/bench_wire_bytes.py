"""Bytes per multimodal sample on the wire: a TrainingSample with MMRefs vs shipping the pixel tensors.

    python benchmarks/trainer/bench_wire_bytes.py [--sizes 256x256 1920x1080 ...]

For each image size (256-2048 px per side) one real PNG is drawn, stored in a real `ImageStore` and
described by the renderer's own `ImageResolver`. One sample carries 600 prompt tokens, the image's
placeholders framed by vision start/end, and 300 answer tokens (ids drawn from Qwen2.5's vocabulary, so
varints are as wide as real ones); an RL sample adds per-token logprobs and advantages.
It is serialized as it travels (`TrainingSample.to_msgpack` / `to_json`) and decoded back.
The baseline, computed in the same process: the same sample without `mm_refs` (msgpack) plus the raw
buffers of the `pixel_values` (float32, as the HF processor returns them; bf16 also shown) and
`image_grid_thw` that the real tiny Qwen2.5-VL processor produces for the same stored image. The PNG
in the store is listed too: the trainer reads it once from shared storage, it never rides the wire.

Two pixel bounds: the tiny processor's own (at most 256 merged tokens, 448x448 px) and the real
Qwen2.5-VL preprocessor_config.json's (min_pixels 3136, max_pixels 12845056).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoProcessor

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.layout import compute_layout
from foveal.renderers.store import ImageStore
from foveal.renderers.tiny import build_tiny_processor
from foveal.trainer.data.adapters import ImageAdapter, image_adapter
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.samples import TrainingSample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_pictures import picture  # noqa: E402
from trainer_report import Column, base_parser, emit, fixed, format_table, ratio  # noqa: E402

NAME = "wire_bytes"
DEFAULT_SIZES = ("256x256", "512x512", "640x480", "1024x768", "1280x720", "1024x1024", "1920x1080", "2048x2048")
BOUNDS = {"tiny": (None, None), "qwen2.5-vl": (3136, 12845056)}
# Qwen2.5's vocabulary: text ids below <|endoftext|> (151643); the image/vision ids of its config.json.
TEXT_VOCAB, IMAGE_PAD, VISION_START, VISION_END = 151643, 151655, 151652, 151653
PROMPT_TOKENS, ANSWER_TOKENS = 600, 300


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(side) for side in text.lower().split("x"))
    return width, height


def build_sample(descriptor: RawImageDescriptor, rl: bool, rng: np.random.Generator) -> TrainingSample:
    """A rendered-like sample: prompt, one image's placeholders, answer; loss on the answer only."""
    count = int(descriptor.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
    prompt = rng.integers(0, TEXT_VOCAB, PROMPT_TOKENS).tolist()
    answer = rng.integers(0, TEXT_VOCAB, ANSWER_TOKENS).tolist()
    tokens = [*prompt[:20], VISION_START, *[IMAGE_PAD] * count, VISION_END, *prompt[20:], *answer]
    refs = build_mm_refs(tokens, [(descriptor, (21, count))], IMAGE_PAD, sample_id="wire-0")
    weights = [0.0] * (len(tokens) - ANSWER_TOKENS) + [1.0] * ANSWER_TOKENS
    extra: dict[str, Any] = {}
    if rl:
        extra["inference_logprobs"] = (-rng.exponential(1.0, len(tokens))).tolist()
        extra["advantages"] = [float(rng.normal())] * len(tokens)
    return TrainingSample(sample_id="wire-0", token_ids=tokens, loss_weights=weights, mm_refs=tuple(refs), **extra)


def wire_sizes(sample: TrainingSample) -> dict[str, float]:
    """Encoded sizes, checked to decode back to the same sample, and the msgpack round trip time."""
    packed, text = sample.to_msgpack(), sample.to_json()
    started = time.perf_counter()
    decoded = TrainingSample.from_msgpack(sample.to_msgpack())
    round_trip = time.perf_counter() - started
    if decoded != sample or TrainingSample.from_json(text) != sample:
        raise RuntimeError("a training sample did not survive its own serialization")
    return {"msgpack": len(packed), "json": len(text), "msgpack_round_trip_us": 1e6 * round_trip}


def measure(store: ImageStore, adapter: ImageAdapter, size: tuple[int, int], seed: int) -> dict[str, Any]:
    descriptor = ImageResolver(store, adapter.spec).resolve(picture(*size, seed=seed), "image").descriptor
    layout = compute_layout(adapter.spec, *size)
    processed = adapter.process(store.open_verified(descriptor.raw_image_uri, descriptor.hash))
    if processed.grid != layout.image_grid_thw:
        raise RuntimeError(f"processor grid {processed.grid} != layout {layout.image_grid_thw}")
    rng = np.random.default_rng(seed)
    sft, rl = build_sample(descriptor, False, rng), build_sample(descriptor, True, rng)
    sft_wire, rl_wire = wire_sizes(sft), wire_sizes(rl)
    tokens_only = len(sft.model_copy(update={"mm_refs": ()}).to_msgpack())
    grid_bytes = 3 * 8  # image_grid_thw: one int64 row per image
    pixels = processed.tensors["pixel_values"]
    pixels_fp32 = pixels.numel() * pixels.element_size()
    shipped_fp32 = tokens_only + pixels_fp32 + grid_bytes
    shipped_bf16 = tokens_only + pixels_fp32 // 2 + grid_bytes
    return {
        "width": size[0],
        "height": size[1],
        "image_grid_thw": list(layout.image_grid_thw),
        "placeholder_tokens": layout.num_placeholder_tokens,
        "sample_tokens": sft.num_tokens,
        "png_bytes": len(store.read_verified(descriptor.raw_image_uri, descriptor.hash)),
        "mm_ref_msgpack_bytes": sft_wire["msgpack"] - tokens_only,
        "sft_msgpack_bytes": sft_wire["msgpack"],
        "sft_json_bytes": sft_wire["json"],
        "rl_msgpack_bytes": rl_wire["msgpack"],
        "rl_json_bytes": rl_wire["json"],
        "sft_msgpack_round_trip_us": sft_wire["msgpack_round_trip_us"],
        "pixel_values_fp32_bytes": pixels_fp32,
        "tensor_sample_fp32_bytes": shipped_fp32,
        "tensor_sample_bf16_bytes": shipped_bf16,
        "fp32_tensors_vs_refs": shipped_fp32 / sft_wire["msgpack"],
        "bf16_tensors_vs_refs": shipped_bf16 / sft_wire["msgpack"],
    }


def run(sizes: Sequence[tuple[int, int]], seed: int, cache_root: Path | None = None) -> dict[str, Any]:
    processor = AutoProcessor.from_pretrained(build_tiny_processor("qwen2_5_vl", cache_root))
    rows = []
    with tempfile.TemporaryDirectory(prefix="foveal-wire-") as workdir:
        store = ImageStore(Path(workdir) / "assets", MultimodalConfig(), durable=False)
        for bounds, (min_pixels, max_pixels) in BOUNDS.items():
            adapter = image_adapter(
                "qwen2_vl", processor, MultimodalConfig(min_pixels=min_pixels, max_pixels=max_pixels)
            )
            for index, size in enumerate(sizes):
                rows.append({"bounds": bounds, **measure(store, adapter, size, seed + index)})
    summary: dict[str, Any] = {
        "baseline": "the same sample shipped as token msgpack + raw pixel_values/image_grid_thw buffers (same process)"
    }
    for bounds in BOUNDS:
        mine = [row for row in rows if row["bounds"] == bounds]
        summary[bounds] = {
            "median_sft_msgpack_bytes": statistics.median(row["sft_msgpack_bytes"] for row in mine),
            "median_mm_ref_msgpack_bytes": statistics.median(row["mm_ref_msgpack_bytes"] for row in mine),
            "median_fp32_tensors_vs_refs": statistics.median(row["fp32_tensors_vs_refs"] for row in mine),
            "min_fp32_tensors_vs_refs": min(row["fp32_tensors_vs_refs"] for row in mine),
            "max_fp32_tensors_vs_refs": max(row["fp32_tensors_vs_refs"] for row in mine),
        }
    settings = {"seed": seed, "prompt_tokens": PROMPT_TOKENS, "answer_tokens": ANSWER_TOKENS, "bounds": BOUNDS}
    return {"settings": settings, "rows": rows, "summary": summary}


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f}"


COLUMNS = (
    Column("bounds", "bounds"),
    Column("size", "image"),
    Column("placeholder_tokens", "img tokens"),
    Column("sft_msgpack_bytes", "sample msgpack KiB", _kib),
    Column("sft_json_bytes", "sample JSON KiB", _kib),
    Column("rl_msgpack_bytes", "RL sample msgpack KiB", _kib),
    Column("mm_ref_msgpack_bytes", "per mm_ref B", fixed(0)),
    Column("png_bytes", "PNG in store KiB", _kib),
    Column("tensor_sample_fp32_bytes", "with fp32 pixels KiB", _kib),
    Column("fp32_tensors_vs_refs", "fp32/refs", ratio),
    Column("bf16_tensors_vs_refs", "bf16/refs", ratio),
)


def main(argv: Sequence[str] | None = None, cache_root: Path | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="WIDTHxHEIGHT of each image")
    args = parser.parse_args(argv)
    body = run([parse_size(size) for size in args.sizes], args.seed, cache_root)
    table_rows = [{**row, "size": f"{row['width']}x{row['height']}"} for row in body["rows"]]
    return emit(NAME, __file__, argv, args.out, body, format_table(table_rows, COLUMNS))


if __name__ == "__main__":
    main()
