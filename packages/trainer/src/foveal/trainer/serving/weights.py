"""Weight updates from a safetensors checkpoint folder, checked in full before anything is swapped.

Accepts exactly what the trainer writes (`foveal.trainer.training.checkpoint`: `save_pretrained` output, i.e.
`model.safetensors` or shards named by `model.safetensors.index.json`, beside optimizer and RNG files
that are ignored). `save_pretrained` writes checkpoint key names (Qwen-VL: `model.layers.*`, `visual.*`)
that differ from the module's (`model.language_model.layers.*`, `model.visual.*`); keys are mapped with
transformers' own conversion rules for the served class, the ones `from_pretrained` applies. Every model
tensor must be present with its shape (tied weights once), and nothing else may be: a bad folder is a
`BadCheckpoint` (422) and the served weights stay as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class BadCheckpoint(ValueError):
    """A checkpoint folder that cannot replace the served weights; names the field and what was wrong."""

    http_status = 422

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


def checkpoint_files(folder: Path) -> list[Path]:
    """The model's safetensors files in `folder`: the index's shards, else `model.safetensors`."""
    if not folder.is_dir():
        raise BadCheckpoint("path", str(folder), "a folder the server can read")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise BadCheckpoint("path", str(index), f"a safetensors index with a weight_map ({error})") from None
        names = sorted(set(weight_map.values()))
        if any(Path(name).name != name for name in names):
            raise BadCheckpoint("path", str(index), "shard names without folders")
        return [folder / name for name in names]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise BadCheckpoint("path", str(folder), f"a folder with {SINGLE_FILE} or {INDEX_FILE}")


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model's files, on CPU, by checkpoint key."""
    tensors: dict[str, torch.Tensor] = {}
    for file in checkpoint_files(folder):
        try:
            tensors.update(load_file(file))
        except (OSError, SafetensorError) as error:
            raise BadCheckpoint("path", str(file), f"a readable safetensors file ({error})") from None
    return tensors


def matched_update(model: torch.nn.Module, checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint tensors renamed to the model's keys and cast to its dtypes, after checking they fit exactly.

    Errors name the checkpoint's own key, the one a user finds in the file.
    """
    renamed, origin = _renamed_keys(model, checkpoint)
    state = model.state_dict()
    unknown = sorted(set(renamed) - set(state))
    if unknown:
        raise BadCheckpoint(
            f"weights[{origin[unknown[0]]!r}]", f"{len(unknown)} unknown keys", "only keys the model has"
        )
    update: dict[str, torch.Tensor] = {}
    for names in _tied_groups(state):
        present = [name for name in names if name in renamed]
        if not present:
            raise BadCheckpoint(f"weights[{names[0]!r}]", "missing", "every tensor of the served model")
        source, target = renamed[present[0]], state[names[0]]
        field = f"weights[{origin[present[0]]!r}]"
        if tuple(source.shape) != tuple(target.shape):
            raise BadCheckpoint(field, list(source.shape), f"shape {list(target.shape)}")
        if not source.is_floating_point() and source.dtype != target.dtype:
            raise BadCheckpoint(field, str(source.dtype), str(target.dtype))
        update[names[0]] = source.to(target.dtype)
    return update


@torch.no_grad()
def apply_update(model: torch.nn.Module, update: dict[str, torch.Tensor]) -> None:
    """Copy checked tensors into the model in place (tied weights share storage, so one copy serves all)."""
    state = model.state_dict()
    for name, tensor in update.items():
        state[name].copy_(tensor, non_blocking=False)


def _renamed_keys(
    model: torch.nn.Module, checkpoint: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors by model key, and each model key's checkpoint key."""
    transforms = get_model_conversion_mapping(model)
    if any(isinstance(t, WeightConverter) for t in transforms):
        kind = type(model).__name__
        raise BadCheckpoint("model", kind, "a model whose checkpoint keys only need renaming (no tensor conversions)")
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in checkpoint.items():
        new_key, _ = rename_source_key(key, renamings, [], model.base_model_prefix, None)
        if new_key in renamed:
            raise BadCheckpoint(f"weights[{key!r}]", new_key, "one checkpoint key per model tensor")
        renamed[new_key], origin[new_key] = tensor, key
    return renamed, origin


def _tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """State-dict keys grouped by the storage they share (tied embeddings), in state-dict order."""
    groups: dict[tuple[int, int], list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset()), []).append(name)
    return list(groups.values())
