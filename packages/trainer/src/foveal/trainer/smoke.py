"""`foveal smoke`: build a tiny VLM, show it a drawn image, run one forward pass on CPU, print a summary.

It is the shortest end-to-end proof that an install works offline: tokenizer, chat template, image
processor, placeholder expansion and the real model class agree, with no network and no GPU.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as transformers_logging

from foveal.trainer.commands import SMOKE_FAMILY
from foveal.trainer.tiny_models import build_tiny_model

QUESTION = "What shapes are in the image?"
ANSWER = "A red circle and a blue square."


@dataclass(frozen=True)
class SmokeResult:
    family: str
    folder: Path
    image_grid_thw: tuple[int, int, int]
    placeholder_tokens: int
    logits_shape: tuple[int, ...]
    loss: float
    seconds: float


def draw_image(width: int = 320, height: int = 200) -> Image.Image:
    """A non-square RGB image with two shapes, so the grid is not the trivial square case."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 40, 150, 160), fill="red")
    draw.rectangle((190, 50, 290, 150), fill="blue")
    return image


def run_smoke(family: str = SMOKE_FAMILY, cache_root: Path | None = None) -> SmokeResult:
    """Build (or reuse) the tiny model of `family` and run one scored forward pass over an image turn."""
    start = time.perf_counter()
    folder = build_tiny_model(family, cache_root)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": ANSWER},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    batch = processor(text=[text], images=[draw_image()], return_tensors="pt")
    placeholders = batch["input_ids"] == model.config.image_token_id
    labels = batch["input_ids"].masked_fill(placeholders, -100)
    with torch.no_grad():
        output = model(**batch, labels=labels)
    return SmokeResult(
        family=family,
        folder=folder,
        image_grid_thw=_image_grid(batch, int(placeholders.sum())),
        placeholder_tokens=int(placeholders.sum()),
        logits_shape=tuple(output.logits.shape),
        loss=float(output.loss),
        seconds=time.perf_counter() - start,
    )


def _image_grid(batch: dict[str, Any], placeholders: int) -> tuple[int, int, int]:
    """The processor's patch grid (Qwen-VL); for Gemma 3 and InternVL, which report none, one square grid of tokens per
    image in `pixel_values` (Gemma 3: the image; InternVL: its tiles plus thumbnail)."""
    if "image_grid_thw" in batch:
        return tuple(batch["image_grid_thw"][0].tolist())  # type: ignore[return-value]
    pixels = batch["pixel_values"]
    tiles = int(pixels.shape[1] if pixels.ndim == 5 else pixels.shape[0])  # SmolVLM: [1, tiles, 3, H, W]
    side = math.isqrt(placeholders // tiles)
    return (tiles, side, side)


def main(args: argparse.Namespace) -> int:
    """`foveal smoke` (declared in foveal.trainer.commands): print the summary; 1 if the loss is not finite."""
    transformers_logging.disable_progress_bar()  # a CLI summary, not per-shard progress bars
    result = run_smoke(args.family, args.cache_root)
    print(f"family        {result.family}")
    print(f"folder        {result.folder}")
    unit = "patches" if result.placeholder_tokens != math.prod(result.image_grid_thw) else "tokens"
    print(f"image grid    {list(result.image_grid_thw)} (t, h, w {unit})")
    print(f"placeholders  {result.placeholder_tokens}")
    print(f"logits        {list(result.logits_shape)}")
    print(f"loss          {result.loss:.4f}")
    print(f"seconds       {result.seconds:.2f}")
    return 0 if math.isfinite(result.loss) else 1
