"""Training datasets as random-access chat conversations (`sft.dataset`, `dflash.dataset`).

Sources:
  - `tiny:demo` or `shapes` (or `shapes:<count>`): the synthetic shapes dataset of `foveal.verifiers.datasets`,
    generated into `<run dir>/data/shapes` with the run's seed (reused when already there);
  - a `.jsonl` file: one `{"messages": [...], "id"?: ...}` object per line; a relative image path is
    relative to the file's folder, which is therefore an allowed image root for this run;
  - anything else: a Hugging Face `datasets` name or folder (needs `foveal-trainer[hf]`), split `train`,
    rows with `messages` and optionally `images` that fill the image parts without a source, in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foveal.configs.errors import RunError
from foveal.renderers.messages import ImagePart, Message, parse_messages
from foveal.trainer.runs.layout import demo_data_dir
from foveal.verifiers.datasets import write_shapes_dataset

DEMO_NAMES = ("tiny:demo", "shapes")
DEMO_EXAMPLES = 2048
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


class DatasetError(RunError, ValueError):
    """A dataset that cannot be read as chat conversations; names the field (row, key) and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {str(value)[:120]!r})")


@dataclass(frozen=True)
class Conversation:
    """One training conversation, validated; image parts hold absolute paths, URIs or PIL images."""

    sample_id: str
    messages: tuple[Message, ...]


class ConversationSource(Protocol):
    """Random access to a dataset's conversations."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Conversation: ...


@dataclass(frozen=True)
class JsonlConversations:
    """A JSONL chat dataset held as raw lines; a line is parsed when its conversation is asked for."""

    path: Path
    lines: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> JsonlConversations:
        lines = tuple(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if not lines:
            raise DatasetError("sft.dataset", str(path), "a JSONL file with at least one conversation")
        return cls(path.resolve(), lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> Conversation:
        field = f"{self.path.name}[line {index + 1}]"
        try:
            row = json.loads(self.lines[index])
        except json.JSONDecodeError as error:
            raise DatasetError(field, self.lines[index], f"a JSON object ({error.msg})") from None
        if not isinstance(row, dict) or "messages" not in row:
            raise DatasetError(field, self.lines[index], 'an object with "messages"')
        messages = _with_images_under(parse_messages(row["messages"]), self.path.parent)
        return Conversation(str(row.get("id", f"{self.path.stem}-{index}")), messages)


@dataclass(frozen=True)
class HFConversations:
    """A Hugging Face dataset split whose rows carry `messages` (and optionally `images`)."""

    name: str
    rows: Any

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Conversation:
        row = self.rows[index]
        images = iter(row.get("images") or ())
        messages = [_fill_images(message, images) for message in row["messages"]]
        return Conversation(str(row.get("id", f"{self.name}-{index}")), parse_messages(messages))


def open_dataset(dataset: str, run_dir: Path, seed: int) -> tuple[ConversationSource, tuple[Path, ...]]:
    """The conversations named by `sft.dataset` and the folders their images may be read from."""
    if dataset in DEMO_NAMES or dataset.startswith("shapes:"):
        size = DEMO_EXAMPLES if dataset in DEMO_NAMES else _demo_size(dataset)
        path = write_shapes_dataset(demo_data_dir(run_dir, "shapes"), size, seed=seed, split="train")
        return JsonlConversations.read(path), (path.parent.resolve(),)
    path = Path(dataset)
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise DatasetError("sft.dataset", dataset, "an existing JSONL file")
        return JsonlConversations.read(path), (path.parent.resolve(),)
    return _open_hf(dataset), ()


def _with_images_under(messages: tuple[Message, ...], folder: Path) -> tuple[Message, ...]:
    """Relative image paths resolved against the dataset file's folder (the renderer wants absolute ones)."""

    def resolve(part: Any) -> Any:
        source = getattr(part, "image", None)
        if isinstance(source, str) and not _SCHEME.match(source) and not Path(source).is_absolute():
            return ImagePart(image=str(folder / source))
        return part

    return tuple(
        message
        if isinstance(message.content, str)
        else message.model_copy(update={"content": tuple(map(resolve, message.content))})
        for message in messages
    )


def _fill_images(message: dict[str, Any], images: Iterator[Any]) -> dict[str, Any]:
    """A HF row's message as the renderer reads it.

    Arrow stores every part with every key of every other part (`{"type": "image", "text": None}`), so
    keys holding None are dropped; image parts without a source take the next picture of the row's
    separate `images` column, the usual layout of HF vision chat datasets.
    """
    message = {key: value for key, value in message.items() if value is not None}
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return message
    parts = [{key: value for key, value in part.items() if value is not None} for part in content]
    return {**message, "content": [_with_picture(part, images) for part in parts]}


def _with_picture(part: dict[str, Any], images: Iterator[Any]) -> dict[str, Any]:
    """An image part that names no source gets the row's next picture; other parts pass through."""
    if part.get("type") != "image" or {"image", "url", "path"} & set(part):
        return part
    return {**part, "image": next(images)}


def _demo_size(dataset: str) -> int:
    count = dataset.removeprefix("shapes:")
    if not count.isdigit() or int(count) < 1:
        raise DatasetError("sft.dataset", dataset, "'shapes:<positive number of examples>'")
    return int(count)


def _open_hf(dataset: str) -> HFConversations:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "sft.dataset",
            dataset,
            "a .jsonl file, 'tiny:demo', 'shapes[:N]', or (with foveal-trainer[hf]) a HF dataset",
        ) from None
    return HFConversations(dataset, datasets.load_dataset(dataset, split="train"))
