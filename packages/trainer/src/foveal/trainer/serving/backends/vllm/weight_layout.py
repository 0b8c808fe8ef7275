"""The layout of a safetensors checkpoint (tensor names, shapes, dtypes), read from the file headers alone.

The vLLM server's API process holds no copy of the weights (the workers own the model), so a weight
update is checked against the layout of the checkpoint being served before any worker touches a weight:
the same tensor names, each with the same shape. A trainer checkpoint written by `save_pretrained` uses
the served checkpoint's names (transformers writes the original key format back), so an exact match is
what a good update looks like; anything else is a `BadCheckpoint` (422) and the served weights stay.
Only headers are read, so checking a 70B checkpoint costs what checking a tiny one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from safetensors import SafetensorError, safe_open

from foveal.trainer.serving.weights import BadCheckpoint, checkpoint_files

_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
"""safetensors dtype names that load into any floating parameter (the loaders cast on copy)."""


@dataclass(frozen=True, slots=True)
class TensorLayout:
    dtype: str
    """safetensors' dtype name, e.g. `BF16`, `F32`, `I64`."""
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WeightLayout:
    """The model files of one checkpoint folder and every tensor in them, by checkpoint name."""

    files: tuple[Path, ...]
    tensors: Mapping[str, TensorLayout]


def read_layout(folder: Path) -> WeightLayout:
    """The layout of the model files `checkpoint_files` picks in `folder` (never optimizer or RNG files)."""
    files = checkpoint_files(folder)
    tensors: dict[str, TensorLayout] = {}
    for file in files:
        for name, layout in _file_layout(file).items():
            if name in tensors:
                raise BadCheckpoint(f"weights[{name!r}]", file.name, "each tensor in exactly one file")
            tensors[name] = layout
    return WeightLayout(tuple(files), MappingProxyType(tensors))


def check_same_layout(update: WeightLayout, served: WeightLayout) -> None:
    """Raise `BadCheckpoint` naming the first tensor that is missing, unknown, or of the wrong shape or kind."""
    missing = sorted(served.tensors.keys() - update.tensors.keys())
    if missing:
        raise BadCheckpoint(
            f"weights[{missing[0]!r}]", f"{len(missing)} missing", "every tensor of the served checkpoint"
        )
    unknown = sorted(update.tensors.keys() - served.tensors.keys())
    if unknown:
        raise BadCheckpoint(
            f"weights[{unknown[0]!r}]", f"{len(unknown)} unknown", "only tensors of the served checkpoint"
        )
    for name, want in served.tensors.items():
        got = update.tensors[name]
        if got.shape != want.shape:
            raise BadCheckpoint(f"weights[{name!r}]", list(got.shape), f"shape {list(want.shape)}")
        if not _loadable(got.dtype, want.dtype):
            raise BadCheckpoint(f"weights[{name!r}]", got.dtype, f"{want.dtype} (or any float for a float tensor)")


def _file_layout(file: Path) -> dict[str, TensorLayout]:
    try:
        with safe_open(file, framework="pt") as handle:
            return {
                name: TensorLayout(handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape()))
                for name in handle.keys()  # noqa: SIM118 (a safe_open handle is not a dict)
            }
    except (OSError, SafetensorError) as error:
        raise BadCheckpoint("path", str(file), f"a readable safetensors file ({error})") from None


def _loadable(got: str, want: str) -> bool:
    """Floats load into floats of any precision (the loaders cast); integer and bool tensors must match."""
    return got == want or (got in _FLOAT_DTYPES and want in _FLOAT_DTYPES)
