"""Renderers benchmark (issue 3): Foveal's `Renderer.render` against `apply_chat_template` + the HF processor.

Both paths get the same seeded conversations (text-only, one image, 2-4 images; multi-turn) whose images
are real JPEG/PNG files of 256..2048 px drawn before any timing, and the same tokenizer and image
processor settings (a tiny local model folder from `foveal.renderers.tiny`). Every conversation is run
through both paths back to back, alternating which goes first, and the token ids must agree. Three
passes tell apart the costs a renderer really has:

- first_sight: an empty store and a new renderer. Each image is read and its header checked (format,
  size within the caps, mode, no rotation, file complete); a plain PNG/JPEG/WebP is hashed (xxh3-128)
  and written to the store byte for byte, anything else is decoded, made upright and RGB, and encoded
  as a lossless PNG first. The layout comes from the header's size.
- repeat: the same renderer renders the same conversations again (the next epoch, an RL group of
  rollouts). The source bytes are read and hashed and the stored file is found.
- repeat_new_renderer: a fresh renderer and store object over the already filled store folder (another
  worker process, a restart). Each image is checked as on first sight; the file is already there (read
  back and hash-checked), so nothing is written.

The HF path has no cache: every pass decodes, resizes, normalizes and patchifies every image and ships
`pixel_values` (float32). Ratios compare the two paths inside one process, so a busy machine slows
both. Wall time is what a caller waits; CPU time counts every thread (the HF path uses torch's).

    uv run --locked python benchmarks/renderers/bench_render.py                  # 1,000 conversations
    uv run --locked python benchmarks/renderers/bench_render.py --quick          # smoke test, seconds
    uv run --locked python benchmarks/renderers/bench_render.py --family all --n 200 --max-side 768  # every family

`--family all` runs every family with a tiny processor (`foveal.renderers.tiny.FAMILIES`) one after the other in
one process, each against its own HF baseline; text-only families (qwen3, llama3, gpt_oss) get the same conversations
without their images, and their baseline is the tokenizer's `apply_chat_template(..., tokenize=True)`.
"""

from __future__ import annotations

import argparse
import gc
import os
import json
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_workload import Conversation, make_workload  # noqa: E402

from foveal.configs.multimodal import MultimodalConfig  # noqa: E402
from foveal.configs.renderer import RendererConfig  # noqa: E402
from foveal.renderers.contract import canonical_json, encode_mmraw  # noqa: E402
from foveal.renderers.factory import build_renderer  # noqa: E402
from foveal.renderers.images import load_image_bytes  # noqa: E402
from foveal.renderers.rendering import Renderer  # noqa: E402
from foveal.renderers.store import ImageStore  # noqa: E402
from foveal.renderers.tiny import FAMILIES, build_tiny_processor, family_spec  # noqa: E402
from foveal.renderers.verbatim import verbatim_image  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
COMMAND = ("uv", "run", "--locked", "python", "benchmarks/renderers/bench_render.py")
ALL = "all"
PASSES = ("first_sight", "repeat", "repeat_new_renderer")
SPEEDUP_TARGET = 20.0
DESCRIPTOR_TARGET_BYTES = 1024
BREAKDOWN_IMAGES = 60
"""Images timed step by step after the passes, to show where a first sight's time goes."""


@dataclass(frozen=True)
class BenchConfig:
    """What one run measures; recorded verbatim in the JSON."""

    n: int = 1000
    seed: int = 0
    family: str = "qwen2_5_vl"
    max_pixels: int | None = None
    """Override of the processor's max_pixels for both paths (None: the tiny processor's own bound)."""
    max_side: int = 2048
    durable: bool = False
    """fsync every new store file (inference servers do; the SFT data path does not)."""


@dataclass
class Sample:
    """One conversation in one pass: both paths' wall and CPU seconds, and what each produced."""

    images: int
    ours_wall: float
    ours_cpu: float
    hf_wall: float
    hf_cpu: float
    ids_match: bool
    descriptor_bytes: list[int] = field(default_factory=list)
    mmraw_bytes: list[int] = field(default_factory=list)
    pixel_bytes: list[int] = field(default_factory=list)


class HFPipeline:
    """What a transformers user writes: chat template to text, then the processor on text and images."""

    def __init__(self, folder: Path, bounds: dict[str, int]) -> None:
        from transformers import AutoProcessor
        from transformers.image_utils import load_image

        self.processor = AutoProcessor.from_pretrained(folder, **bounds)
        self.load_image = load_image  # open, EXIF-transpose, RGB: HF's own loader

    def __call__(self, messages: list[dict[str, Any]], images: list[str], add_generation_prompt: bool) -> Any:
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        pictures = [self.load_image(path) for path in images] or None
        # The template writes any BOS itself (Gemma 3's <bos>); the processor must not add a second one.
        return self.processor(text=[text], images=pictures, return_tensors="np", add_special_tokens=False)


class HFTextPipeline:
    """A text-only model's baseline: the tokenizer's own `apply_chat_template(..., tokenize=True)`."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def __call__(self, messages: list[dict[str, Any]], images: list[str], add_generation_prompt: bool) -> Any:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True, return_tensors="np"
        )


def hf_model_folder(family: str, processor_dir: Path, workdir: Path) -> Path:
    """The tiny processor folder plus the `config.json` a released model has: AutoProcessor reads its
    `model_type` to pick the video processor (Qwen3-VL's), which a processor-only folder does not name."""
    folder = workdir / f"hf-{family}"
    if not folder.exists():
        shutil.copytree(processor_dir, folder)
        model_type = {"qwen3_vl_thinking": "qwen3_vl"}.get(family, family)  # the Thinking models' config says qwen3_vl
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def run_benchmark(config: BenchConfig, workdir: Path, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Generate the workload under `workdir`, time the three passes and return the JSON-ready report."""
    if config.family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {config.family!r}")
    vlm = family_spec(config.family).is_vlm
    load_at_start = os.getloadavg()[0]
    folders = {name: workdir / name for name in ("images", "warmup", "assets")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    log(f"drawing {config.n} conversations' images into {folders['images']} ...")
    conversations = make_workload(config.n, config.seed, folders["images"], config.max_side)
    warmup = [c for c in make_workload(4, config.seed + 1, folders["warmup"], config.max_side) if c.images]
    if not vlm:  # the same conversations without their images
        conversations, warmup = [c.text_only() for c in conversations], [c.text_only() for c in warmup]
    multimodal = MultimodalConfig(
        allowed_image_roots=[folders["images"], folders["warmup"]], max_pixels=config.max_pixels
    )
    model_dir = build_tiny_processor(config.family)

    def new_renderer() -> Renderer:
        """A renderer with its own store object (and so nothing cached in memory) over the one store folder."""
        store = ImageStore(folders["assets"], multimodal, durable=config.durable)
        return build_renderer(model_dir, RendererConfig(), store=store, multimodal=multimodal)

    renderer = new_renderer()
    if vlm:
        hf_folder = hf_model_folder(config.family, model_dir, workdir)
        spec = renderer.images.spec  # Qwen-VL layouts have pixel bounds; Gemma 3's fixed square has none
        bounds = {}
        if config.max_pixels is not None and hasattr(spec, "min_pixels"):
            bounds = {"min_pixels": spec.min_pixels, "max_pixels": config.max_pixels}
        hf: HFPipeline | HFTextPipeline = HFPipeline(hf_folder, bounds)
    else:
        hf = HFTextPipeline(model_dir)
    for conversation in warmup:  # first calls load lazily built state on both sides
        _measure(renderer, hf, conversation, 0)
    passes = {}
    for name in PASSES:
        if name == "repeat_new_renderer":
            renderer = new_renderer()
        log(f"pass {name} ...")
        gc.collect()
        passes[name] = [_measure(renderer, hf, c, i) for i, c in enumerate(conversations)]
    images = [path for c in conversations for path in c.images][:BREAKDOWN_IMAGES]
    report = _report(config, conversations, passes)
    report["first_sight_breakdown"] = _breakdown(images, multimodal, hf) if isinstance(hf, HFPipeline) else None
    report["environment"] = _environment(load_at_start)
    return report


def _measure(renderer: Renderer, hf: HFPipeline | HFTextPipeline, conversation: Conversation, index: int) -> Sample:
    """Both paths on one conversation, alternating which runs first so neither always gets warm caches."""
    ours_messages, hf_messages = conversation.foveal_messages(), conversation.hf_messages()
    if isinstance(hf, HFTextPipeline):
        ours_messages = hf_messages = conversation.text_messages()
    elif renderer.family in PARTS_ONLY_FAMILIES:
        hf_messages = [_as_parts(message) for message in hf_messages]
    paths, prompt = [str(path) for path in conversation.images], conversation.add_generation_prompt

    def ours() -> Any:
        return renderer.render(ours_messages, add_generation_prompt=prompt)

    def theirs() -> Any:
        return hf(hf_messages, paths, prompt)

    if index % 2 == 0:
        (rendered, ours_wall, ours_cpu), (out, hf_wall, hf_cpu) = _timed(ours), _timed(theirs)
    else:
        (out, hf_wall, hf_cpu), (rendered, ours_wall, ours_cpu) = _timed(theirs), _timed(ours)
    sample = Sample(
        images=len(conversation.images),
        ours_wall=ours_wall,
        ours_cpu=ours_cpu,
        hf_wall=hf_wall,
        hf_cpu=hf_cpu,
        ids_match=list(rendered.token_ids) == out["input_ids"][0].tolist(),
        descriptor_bytes=[len(canonical_json(image.descriptor)) for image in rendered.images],
        mmraw_bytes=[len(encode_mmraw(image.descriptor)) for image in rendered.images],
    )
    if conversation.images and "image_grid_thw" in out:  # Qwen-VL, GLM-4.1V: one row per patch
        pixels = out["pixel_values"]
        row_bytes = pixels.shape[1] * pixels.itemsize
        sample.pixel_bytes = [int(np.prod(grid)) * row_bytes for grid in out["image_grid_thw"]]
    elif conversation.images and out["pixel_values"].ndim == 5:  # SmolVLM: [1, tiles of all images, 3, H, W]
        tile_bytes = int(out["pixel_values"][0, 0].nbytes)
        sample.pixel_bytes = [image.descriptor.payload["image_grid_thw"][0] * tile_bytes for image in rendered.images]
    elif conversation.images:  # Gemma 3: one fixed-size image per picture
        sample.pixel_bytes = [int(image.nbytes) for image in out["pixel_values"]]
    return sample


PARTS_ONLY_FAMILIES = ("smolvlm",)
"""Families whose template reads content only as a list of parts (SmolVLM2's prints nothing for a plain string), so
their users write every message, system and assistant ones too, as parts."""


def _as_parts(message: dict[str, Any]) -> dict[str, Any]:
    content = message["content"]
    return dict(message, content=[{"type": "text", "text": content}]) if isinstance(content, str) else message


def _breakdown(paths: list[Path], policy: MultimodalConfig, hf: HFPipeline) -> dict[str, Any]:
    """Where a first sight's time goes, per image, against the HF image processor on the same file.

    `verbatim` is the store's header check, completeness check and hash; `canonical` is the decode,
    orient, RGB and PNG encode (and hash) the store falls back to, timed on every image (even those kept
    verbatim) to show what the verbatim path saves. CPU time, not wall time: these are single calls,
    and on a shared machine CPU time is the steadier measure (the HF processor's figure sums its torch
    threads)."""
    steps: dict[str, list[float]] = {name: [] for name in ("verbatim", "canonical", "hf_load", "hf_process")}

    def step(name: str, call: Callable[[], Any]) -> Any:
        result, _, cpu_seconds = _timed(call)
        steps[name].append(cpu_seconds)
        return result

    stored_bytes = source_bytes = pixels = kept = 0
    for path in paths:
        data = path.read_bytes()
        verbatim = step("verbatim", lambda: verbatim_image(data, policy))
        canonical = step("canonical", lambda: load_image_bytes(data, policy))
        picture = step("hf_load", lambda: hf.load_image(str(path)))
        step("hf_process", lambda: hf.processor.image_processor(images=[picture]))
        stored = verbatim or canonical
        kept += verbatim is not None
        stored_bytes, source_bytes = stored_bytes + len(stored.data), source_bytes + len(data)
        pixels += stored.width * stored.height
    return {
        "images": len(paths),
        "kept_verbatim": kept,
        "megapixels_mean": pixels / len(paths) / 1e6 if paths else None,
        "cpu_ms_per_image": {name: 1e3 * float(np.mean(times)) if times else None for name, times in steps.items()},
        "stored_over_source_bytes": stored_bytes / source_bytes if source_bytes else None,
    }


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _report(config: BenchConfig, conversations: list[Conversation], passes: dict[str, list[Sample]]) -> dict[str, Any]:
    first = passes["first_sight"]
    rows = [
        _row(name, kind, [s for s in samples if (s.images > 0) == (kind == "image")])
        for name, samples in passes.items()
        for kind in ("image", "text")
    ]
    descriptor = [b for s in first for b in s.descriptor_bytes]
    mmraw = [b for s in first for b in s.mmraw_bytes]
    pixels = [b for s in first for b in s.pixel_bytes]
    all_samples = [s for samples in passes.values() for s in samples]
    image_rows = {r["pass"]: r["speedup"] for r in rows if r["kind"] == "image" and r["conversations"]}
    return {
        "benchmark": "renderers/bench_render",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(config),
        "workload": {
            "conversations": len(conversations),
            "image_conversations": sum(1 for c in conversations if c.images),
            "text_conversations": sum(1 for c in conversations if not c.images),
            "images": sum(len(c.images) for c in conversations),
            "photo_jpeg": sum(1 for c in conversations for p in c.images if p.suffix == ".jpg"),
            "screenshot_png": sum(1 for c in conversations for p in c.images if p.suffix == ".png"),
            "source_megapixels_mean": _source_megapixels(conversations),
        },
        "passes": rows,
        "bytes_per_image": {
            "descriptor_json": _spread(descriptor),
            "mmraw_ref": _spread(mmraw),
            "hf_pixel_values": _spread(pixels),
            "pixel_values_over_descriptor": float(np.mean(pixels)) / float(np.mean(descriptor)) if descriptor else None,
        },
        "parity": {"checked": len(all_samples), "mismatches": sum(1 for s in all_samples if not s.ids_match)},
        "targets": {
            "image_speedup": {"target": SPEEDUP_TARGET, "measured": image_rows,
                              "met": {k: v >= SPEEDUP_TARGET for k, v in image_rows.items()}},
            "descriptor_bytes_per_image": {"target": DESCRIPTOR_TARGET_BYTES,
                                           "measured_max": max(descriptor, default=None),
                                           "met": max(descriptor) <= DESCRIPTOR_TARGET_BYTES if descriptor else None},
        },
    }  # fmt: skip


def _row(name: str, kind: str, samples: list[Sample]) -> dict[str, Any]:
    ours_wall, hf_wall = sum(s.ours_wall for s in samples), sum(s.hf_wall for s in samples)
    ours_cpu, hf_cpu = sum(s.ours_cpu for s in samples), sum(s.hf_cpu for s in samples)
    n = len(samples)
    return {
        "pass": name,
        "kind": kind,
        "conversations": n,
        "images": sum(s.images for s in samples),
        "ours_samples_per_s": n / ours_wall if n else None,
        "hf_samples_per_s": n / hf_wall if n else None,
        "speedup": hf_wall / ours_wall if n else None,
        "ours_cpu_ms_per_sample": 1e3 * ours_cpu / n if n else None,
        "hf_cpu_ms_per_sample": 1e3 * hf_cpu / n if n else None,
        "cpu_speedup": hf_cpu / ours_cpu if n and ours_cpu > 0 else None,
    }


def _spread(values: list[int]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "max": None}
    return {"count": len(values), "mean": float(np.mean(values)), "max": int(max(values))}


def _source_megapixels(conversations: list[Conversation]) -> float | None:
    from PIL import Image

    sizes = []
    for path in (p for c in conversations for p in c.images):
        with Image.open(path) as image:
            sizes.append(image.width * image.height / 1e6)
    return float(np.mean(sizes)) if sizes else None


def _environment(load_at_start: float) -> dict[str, Any]:
    """Versions and machine; the load averages say how busy the machine was (ratios hold up better)."""
    import torch

    packages = ("transformers", "tokenizers", "torch", "pillow", "numpy", "xxhash")
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": os.getloadavg()[0],
        **{name: version(name) for name in packages},
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table (what the command prints)."""
    w, c = report["workload"], report["config"]
    lines = [
        f"renderers benchmark: family {c['family']}, {w['conversations']} conversations "
        f"({w['image_conversations']} with {w['images']} images, {w['text_conversations']} text-only), "
        f"seed {c['seed']}, "
        f"max_pixels {c['max_pixels'] or 'processor default'}, mean source {w['source_megapixels_mean'] or 0:.2f} Mpx",
        "",
        f"{'pass':<22}{'kind':<7}{'convs':>6}{'ours/s':>10}{'HF/s':>9}{'speed-up':>10}"
        f"{'ours CPU ms':>13}{'HF CPU ms':>11}{'CPU ratio':>11}",
    ]
    for r in report["passes"]:
        if not r["conversations"]:
            continue
        lines.append(
            f"{r['pass']:<22}{r['kind']:<7}{r['conversations']:>6}{r['ours_samples_per_s']:>10.1f}"
            f"{r['hf_samples_per_s']:>9.1f}{r['speedup']:>9.1f}x{r['ours_cpu_ms_per_sample']:>13.2f}"
            f"{r['hf_cpu_ms_per_sample']:>11.2f}{r['cpu_speedup'] or float('nan'):>10.1f}x"
        )
    b = report["bytes_per_image"]
    if b["descriptor_json"]["count"]:
        lines += [
            "",
            f"bytes per image: descriptor JSON mean {b['descriptor_json']['mean']:.0f} / "
            f"max {b['descriptor_json']['max']}, mmraw ref mean {b['mmraw_ref']['mean']:.0f} / "
            f"max {b['mmraw_ref']['max']}; HF pixel_values mean {b['hf_pixel_values']['mean'] / 1e6:.2f} MB / "
            f"max {b['hf_pixel_values']['max'] / 1e6:.2f} MB "
            f"({b['pixel_values_over_descriptor']:.0f}x the descriptor)",
        ]
    d = report.get("first_sight_breakdown")
    if d and d["images"]:
        steps = ", ".join(f"{step} {ms:.1f}" for step, ms in d["cpu_ms_per_image"].items())
        lines.append(
            f"first sight, CPU ms per image ({d['images']} images, mean {d['megapixels_mean']:.2f} Mpx, "
            f"{d['kept_verbatim']} kept verbatim): {steps}; stored = {d['stored_over_source_bytes']:.2f}x the "
            "source file's bytes"
        )
    t, p = report["targets"], report["parity"]
    met = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in t["image_speedup"]["met"].items())
    if w["images"]:
        lines.append(
            f"targets: image speed-up >= {t['image_speedup']['target']:.0f}x: {met}; "
            f"descriptor <= {t['descriptor_bytes_per_image']['target']} B: "
            f"{'yes' if t['descriptor_bytes_per_image']['met'] else 'no'}"
        )
    lines += [
        f"parity: {p['checked'] - p['mismatches']}/{p['checked']} renders gave the HF path's exact token ids",
    ]
    return "\n".join(lines)


def run_all_families(config: BenchConfig, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Every family in turn, each with its own workload folder and store (so each first sight is a first sight)."""
    reports = {}
    for family in FAMILIES:
        log(f"family {family} ...")
        reports[family] = run_benchmark(replace(config, family=family), workdir / family, log)
    return {
        "benchmark": "renderers/bench_render",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**asdict(config), "family": ALL},
        "summary": [{"family": family, **row} for family, r in reports.items() for row in r["passes"]],
        "parity": {key: sum(r["parity"][key] for r in reports.values()) for key in ("checked", "mismatches")},
        "families": reports,
    }


def format_summary(report: dict[str, Any]) -> str:
    """One line per family, pass and kind: the speed-ups against each family's own HF baseline."""
    lines = [
        f"{'family':<12}{'pass':<22}{'kind':<7}{'convs':>6}{'ours/s':>10}{'HF/s':>9}{'speed-up':>10}"
        f"{'ours CPU ms':>13}{'HF CPU ms':>11}{'CPU ratio':>11}{'parity':>9}",
    ]
    for r in report["summary"]:
        if not r["conversations"]:
            continue
        parity = report["families"][r["family"]]["parity"]
        lines.append(
            f"{r['family']:<12}{r['pass']:<22}{r['kind']:<7}{r['conversations']:>6}{r['ours_samples_per_s']:>10.1f}"
            f"{r['hf_samples_per_s']:>9.1f}{r['speedup']:>9.1f}x{r['ours_cpu_ms_per_sample']:>13.2f}"
            f"{r['hf_cpu_ms_per_sample']:>11.2f}{r['cpu_speedup'] or float('nan'):>10.1f}x"
            f"{parity['checked'] - parity['mismatches']:>5}/{parity['checked']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help=f"conversations (default {BenchConfig.n}; --quick: 12)")
    parser.add_argument("--seed", type=int, default=BenchConfig.seed)
    parser.add_argument("--family", choices=(*FAMILIES, ALL), default=BenchConfig.family, help=f"{ALL}: each in turn")
    parser.add_argument("--max-pixels", type=int, default=None, help="override max_pixels in both paths")
    parser.add_argument("--max-side", type=int, default=None, help="longest image side drawn (default 2048)")
    parser.add_argument("--durable", action="store_true", help="fsync each new store file")
    parser.add_argument("--quick", action="store_true", help="smoke test: 12 conversations, images <= 384 px")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    config = BenchConfig(
        n=args.n or (12 if args.quick else BenchConfig.n),
        seed=args.seed,
        family=args.family,
        max_pixels=args.max_pixels,
        max_side=args.max_side or (384 if args.quick else BenchConfig.max_side),
        durable=args.durable,
    )
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="foveal-bench-render-") as workdir:
        if config.family == ALL:
            report = run_all_families(config, Path(workdir), log)
        else:
            report = run_benchmark(config, Path(workdir), log=log)
    arguments = sys.argv[1:] if argv is None else argv
    report["command"] = shlex.join([*COMMAND, *arguments])
    out = args.out or RESULTS_DIR / f"renderers-{config.family}-n{config.n}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if config.family == ALL:
        print("\n\n".join(format_table(r) for r in report["families"].values()))
        print("\nper family, against its own HF baseline:\n" + format_summary(report))
    else:
        print(format_table(report))
    print(f"\nJSON: {out}")
    return 0 if report["parity"]["mismatches"] == 0 else 1  # different token ids: the two paths did different work


if __name__ == "__main__":
    raise SystemExit(main())
