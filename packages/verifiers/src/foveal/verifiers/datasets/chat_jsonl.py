"""Write synthetic examples as a JSONL chat dataset: one line per conversation, images as PNG files beside it.

Layout of a dataset folder:
    <folder>/<split>.jsonl            {"id", "messages", "answer", "question_kind"} per line
    <folder>/<split>.manifest.json    what generated it; a folder whose manifest matches is reused as is
    <folder>/images/<split>/<id>.png  one image per example

Image parts hold paths relative to the JSONL file's folder (`images/train/<id>.png`), so the folder can be
moved; readers resolve them against that folder. The JSONL and the manifest are written to temporary
names and renamed, and the manifest last, so a run killed while generating leaves no manifest and the
next run regenerates instead of reading a partial file.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from foveal.renderers.atomic_files import write_atomic
from foveal.verifiers.datasets.shapes import ShapesExample, ShapesSpec, Split, iter_examples

FORMAT_VERSION = 1


def write_shapes_dataset(
    folder: Path, count: int, *, seed: int = 0, split: Split = "train", spec: ShapesSpec = ShapesSpec()
) -> Path:
    """The path of `<folder>/<split>.jsonl` holding `count` shapes examples, generating it unless present."""
    folder = Path(folder)
    jsonl = folder / f"{split}.jsonl"
    manifest = folder / f"{split}.manifest.json"
    wanted = {
        "format": FORMAT_VERSION,
        "generator": "shapes",
        "count": count,
        "seed": seed,
        "split": split,
        "spec": asdict(spec),
    }
    if jsonl.is_file() and _read_manifest(manifest) == wanted:
        return jsonl
    image_dir = folder / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = [_line(example, image_dir, folder) for example in iter_examples(count, seed=seed, split=split, spec=spec)]
    write_atomic(jsonl, "".join(lines).encode("utf-8"), durable=False)
    write_atomic(manifest, json.dumps(wanted, sort_keys=True).encode("utf-8"), durable=False)
    return jsonl


def _line(example: ShapesExample, image_dir: Path, folder: Path) -> str:
    path = image_dir / f"{example.example_id}.png"
    example.image.save(path, format="PNG")
    row = {
        "id": example.example_id,
        "messages": example.messages(image=path.relative_to(folder).as_posix()),
        "answer": example.question.answer,
        "question_kind": example.question.kind,
    }
    return json.dumps(row, sort_keys=True) + "\n"


def _read_manifest(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
