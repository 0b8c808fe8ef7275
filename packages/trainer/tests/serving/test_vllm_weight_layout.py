"""The vLLM backend's weight-update checks, read from safetensors headers (no vllm needed, so they run everywhere)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from foveal.trainer.serving.backends.vllm.weight_layout import TensorLayout, check_same_layout, read_layout
from foveal.trainer.serving.weights import BadCheckpoint

SERVED = {"embed.weight": torch.zeros(8, 4), "norm.weight": torch.ones(4), "steps": torch.zeros(2, dtype=torch.int64)}


def write_folder(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors")
    return folder


@pytest.fixture
def served(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "served", SERVED)


@pytest.mark.parametrize("family", ["qwen3", "qwen2_5_vl"])
def test_save_pretrained_writes_the_served_checkpoint_names(
    family: str,
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
    load_tiny_model: Callable[[str], PreTrainedModel],
) -> None:
    """A trainer checkpoint (save_pretrained of the loaded model, whose Qwen-VL keys were renamed on load) has the
    names of the checkpoint vLLM serves."""
    model = load_tiny_model(family)
    model.save_pretrained(tmp_path / "step-00000001")
    update = read_layout(tmp_path / "step-00000001")
    served = read_layout(tiny_model_dir(family))
    check_same_layout(update, served)
    assert update.tensors == served.tensors


def test_only_the_model_files_of_a_checkpoint_are_read(served: Path) -> None:
    save_file({"state/embed.weight/exp_avg": torch.zeros(8, 4)}, served / "optimizer.safetensors")
    (served / "rng").mkdir()
    save_file({"torch": torch.zeros(3)}, served / "rng" / "rank-00000.safetensors")
    layout = read_layout(served)
    assert layout.files == (served / "model.safetensors",)
    assert dict(layout.tensors) == {
        "embed.weight": TensorLayout("F32", (8, 4)),
        "norm.weight": TensorLayout("F32", (4,)),
        "steps": TensorLayout("I64", (2,)),
    }


def test_a_sharded_checkpoint_is_read_through_its_index(tmp_path: Path, served: Path) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    shards = {
        "model-00001-of-00002.safetensors": ["embed.weight"],
        "model-00002-of-00002.safetensors": ["norm.weight", "steps"],
    }
    for shard, names in shards.items():
        save_file({name: SERVED[name] for name in names}, folder / shard)
    weight_map = {name: shard for shard, names in shards.items() for name in names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    layout = read_layout(folder)
    assert [path.name for path in layout.files] == sorted(shards)
    check_same_layout(layout, read_layout(served))


def test_a_tensor_in_two_shards_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "twice"
    folder.mkdir()
    for shard in ("a.safetensors", "b.safetensors"):
        save_file({"embed.weight": SERVED["embed.weight"]}, folder / shard)
    index = {"weight_map": {"embed.weight": "a.safetensors", "other": "b.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(BadCheckpoint) as caught:
        read_layout(folder)
    assert caught.value.field == "weights['embed.weight']"


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda t: t.pop("norm.weight"), "weights['norm.weight']", "every tensor of the served checkpoint"),
        (lambda t: t.update(extra=torch.zeros(1)), "weights['extra']", "only tensors of the served checkpoint"),
        (lambda t: t.update({"embed.weight": torch.zeros(8, 5)}), "weights['embed.weight']", "shape [8, 4]"),
        (lambda t: t.update(steps=torch.zeros(2)), "weights['steps']", "I64"),
    ],
    ids=["missing", "unknown", "shape", "integer-dtype"],
)
def test_a_checkpoint_that_does_not_fit_is_refused_by_name(
    tmp_path: Path, served: Path, change: Callable[[dict[str, torch.Tensor]], object], field: str, expected: str
) -> None:
    tensors = dict(SERVED)
    change(tensors)
    update = read_layout(write_folder(tmp_path / "update", tensors))
    with pytest.raises(BadCheckpoint) as caught:
        check_same_layout(update, read_layout(served))
    assert caught.value.field == field
    assert expected in caught.value.expected
    assert BadCheckpoint.http_status == 422


def test_float_tensors_may_change_precision(tmp_path: Path, served: Path) -> None:
    tensors = {**SERVED, "embed.weight": SERVED["embed.weight"].to(torch.bfloat16)}
    check_same_layout(read_layout(write_folder(tmp_path / "bf16", tensors)), read_layout(served))


def test_a_folder_without_model_files_or_with_a_broken_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadCheckpoint) as missing:
        read_layout(tmp_path)
    assert missing.value.field == "path"
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(BadCheckpoint) as broken:
        read_layout(tmp_path)
    assert broken.value.field == "path"
    assert "readable safetensors" in broken.value.expected
