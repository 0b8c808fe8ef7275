"""`foveal sft` end to end on one GPU: a generated JSONL of real PNG files, the materializer pool on.

    PYTHONPATH=packages/configs/src:packages/renderers/src:packages/verifiers/src:packages/trainer/src \
        python3 benchmarks/trainer/bench_gpu_sft_e2e.py [--steps 8] [--out FILE]
    python benchmarks/trainer/bench_gpu_sft_e2e.py --tiny          # CPU smoke run: the tiny model, 3 steps

What runs is the user's command, `python -m foveal.configs sft --config <file>`, in a child process, on:
  - a Qwen2.5-VL-3B-shaped random model saved as a `from_pretrained` folder (bf16; the dims of
    `bench_gpu_sft.py`, the tiny Qwen2.5-VL's tokenizer and processor, whose special token ids the config takes);
  - `--steps x 16` conversations written as JSONL: one 448x448 PNG file each (256 placeholder tokens; random
    blocks of colour so PNG decoding does real work) and a user/assistant text sized so that each rendered sample
    is uniform in about 512-4096 tokens, the benchmark's mix (the mean tokens per step are in the table); each
    image file is read, hashed, decoded and resized by the trainer's materializer threads, as in any run;
  - the `[model]` defaults (attention, checkpointing, kernels) unless `--set key=value` overrides them, and
    `micro_batch_tokens = 16384`, `[sft].batch_size = 16`.
The child runs until `--steps` rows are in its metrics.jsonl, then is stopped (its final checkpoint, tens of GB
for this model, is not part of the measurement). Reported: the mean useful tokens/s and `data_wait_share` of the
steps after the first `--warmup`, the first step's time, and the seconds from launch to the first step's row.
Compare `tokens_per_s` with `bench_gpu_sft.py`'s row of the same settings run in the same session.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_sft import QWEN25_VL_3B_TEXT, QWEN25_VL_3B_VISION  # noqa: E402
from trainer_report import Column, base_parser, emit, fixed, format_table, percent  # noqa: E402

NAME = "gpu_sft_e2e"
SAMPLES_PER_STEP = 16
IMAGE_SIDE = 448
WORDS = "the a red blue green small large circle square left right above below image shows one two three".split()
TEMPLATE_TOKENS = 30  # the chat template's role markers and vision start/end around one image turn
SPECIAL_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def build_model_folder(work: Path, tiny: bool) -> Path:
    """The tiny Qwen2.5-VL folder (--tiny), or a 3B-shaped random model saved beside its processor."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLConfig

    from foveal.trainer.tiny_models import build_tiny_model

    tiny_folder = build_tiny_model("qwen2_5_vl", work / "tiny-cache")
    if tiny:
        return tiny_folder
    folder = work / "qwen2_5_vl_3b_random"
    if (folder / "config.json").exists():
        return folder
    small = AutoConfig.from_pretrained(tiny_folder)
    text = {
        **QWEN25_VL_3B_TEXT,
        **{k: getattr(small.text_config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    }
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=QWEN25_VL_3B_VISION, tie_word_embeddings=True,
        **{name: getattr(small, name) for name in SPECIAL_IDS},
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_folder).save_pretrained(folder)
    return folder


def write_dataset(folder: Path, model: Path, count: int, seed: int, tiny: bool) -> Path:
    """`count` conversations with one PNG file each; text sized so each sample's tokens are uniform in 512-4096
    (64-256 with --tiny), image placeholders and chat template included, like `bench_gpu_sft.py`'s samples."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    low, high = (64, 256) if tiny else (512, 4096)
    side = 112 if tiny else IMAGE_SIDE
    fixed_tokens = (side // 28) ** 2 + TEMPLATE_TOKENS  # placeholders (14 px patches merged 2 x 2) + template
    per_word = tokens_per_word(model)
    lines = []
    for index in range(count):
        path = folder / "images" / f"{index:05d}.png"
        blocks = Image.effect_noise((side // 16, side // 16), 64 + index % 64).convert("RGB")
        blocks.resize((side, side), Image.Resampling.NEAREST).save(path)
        words = max(2, round((rng.randint(low, high) - fixed_tokens) / per_word))
        question = " ".join(rng.choice(WORDS) for _ in range(words // 2))
        answer = " ".join(rng.choice(WORDS) for _ in range(words - words // 2))
        user = [{"type": "image", "image": f"images/{path.name}"}, {"type": "text", "text": question}]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def tokens_per_word(model: Path) -> float:
    """How many tokens the model's tokenizer spends per word of `WORDS` text."""
    from transformers import AutoTokenizer

    text = " ".join(random.Random(0).choice(WORDS) for _ in range(2000))
    return len(AutoTokenizer.from_pretrained(model)(text)["input_ids"]) / 2000


def write_config(work: Path, model: Path, dataset: Path, steps: int, tiny: bool) -> Path:
    tokens = 1024 if tiny else 16384
    path = work / "sft.toml"
    path.write_text(
        f'[model]\nname_or_path = "{model}"\n\n'
        f'[logging]\nrun_dir = "{work / "run"}"\nplots = false\n\n'
        f'[multimodal]\nallowed_image_roots = ["{dataset.parent}"]\n\n'
        f'[sft]\ndataset = "{dataset}"\nbatch_size = {SAMPLES_PER_STEP}\nmax_steps = {steps + 100}\n\n'
        f"[trainer]\nseed = 0\nseq_len = {tokens}\nmicro_batch_tokens = {tokens}\n\n"
        f"[trainer.checkpoint]\nevery_steps = 100000\n"
    )
    return path


def run_sft(config: Path, overrides: Sequence[str], steps: int, metrics: Path, timeout_s: float) -> dict[str, Any]:
    """Launch `foveal sft`, stop it once `steps` metric rows exist; the rows and the launch-to-first-row time."""
    command = [sys.executable, "-m", "foveal.configs", "sft", "--config", str(config)]
    command += [arg for override in overrides for arg in _override_args(override)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    first_row_s = None
    try:
        while time.perf_counter() - started < timeout_s:
            rows = _rows(metrics)
            first_row_s = first_row_s or (time.perf_counter() - started if rows else None)
            if len(rows) >= steps:
                return {"rows": rows[:steps], "launch_to_first_step_s": first_row_s, "command": command}
            if child.poll() is not None:
                raise SystemExit(f"foveal sft exited with {child.returncode} after {len(rows)} steps")
            time.sleep(0.5)
        raise SystemExit(f"foveal sft: fewer than {steps} steps within {timeout_s:.0f} s")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # the child's final checkpoint is not measured
            child.wait()


def _override_args(override: str) -> list[str]:
    key, _, value = override.partition("=")
    return [f"--{key}", value]


def _rows(metrics: Path) -> list[dict[str, Any]]:
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]


def summarize(run: dict[str, Any], warmup: int) -> dict[str, Any]:
    measured = run["rows"][warmup:]
    tokens = sum(row["tokens"] for row in measured)
    seconds = sum(row["step_seconds"] for row in measured)
    return {
        "steps_measured": len(measured),
        "first_step_s": run["rows"][0]["step_seconds"],
        "launch_to_first_step_s": run["launch_to_first_step_s"],
        "tokens_per_s": tokens / seconds,
        "data_wait_share": statistics.mean(row["data_wait_share"] for row in measured),
        "images_per_step": statistics.mean(row["images"] for row in measured),
        "tokens_per_step": tokens / len(measured),
        "loss_first": run["rows"][0]["loss"],
        "loss_last": run["rows"][-1]["loss"],
    }


COLUMNS = (
    Column("setting", "overrides"),
    Column("steps_measured", "steps"),
    Column("tokens_per_step", "tokens/step", fixed(0)),
    Column("first_step_s", "first step s", fixed(1)),
    Column("launch_to_first_step_s", "launch to 1st step s", fixed(1)),
    Column("tokens_per_s", "useful tokens/s", fixed(0)),
    Column("data_wait_share", "data wait", percent),
    Column("loss_last", "loss", fixed(3)),
)


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on CPU, 3 steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 8; --tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="first steps left out of the mean (2; --tiny 1)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/foveal-sft-e2e"), help="model, data and run folders")
    parser.add_argument("--set", dest="settings", nargs="*", default=[""], help="runs: 'key=value,key=value' each")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.tiny else 8)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = build_model_folder(args.work, args.tiny)
    dataset = write_dataset(args.work / "data", model, steps * SAMPLES_PER_STEP, seed=0, tiny=args.tiny)
    prepared_s = time.perf_counter() - started
    rows = []
    for setting in args.settings:
        run_dir = args.work / "run"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        config = write_config(args.work, model, dataset, steps, args.tiny)
        overrides = [item for item in setting.split(",") if item]
        run = run_sft(config, overrides, steps, run_dir / "metrics.jsonl", args.timeout)
        rows.append({"setting": setting or "(defaults)", **summarize(run, warmup), "steps": run["rows"]})
    body = {
        "settings": {"tiny": args.tiny, "steps": steps, "warmup": warmup, "samples_per_step": SAMPLES_PER_STEP,
                     "model": str(model), "prepare_s": prepared_s,
                     "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
        "rows": rows,
    }  # fmt: skip
    return emit(NAME, __file__, argv, args.out, body, format_rows(body))


def format_rows(body: dict[str, Any]) -> str:
    s = body["settings"]
    header = (
        f"{s['device']}: foveal sft, {s['steps']} steps of {s['samples_per_step']} samples ({s['warmup']} left out)\n"
    )
    return header + format_table(body["rows"], COLUMNS)


if __name__ == "__main__":
    main()
