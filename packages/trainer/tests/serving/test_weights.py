"""Weight updates accept what `save_pretrained` / the trainer writes (renamed keys, shards, tied embeddings)
and refuse anything that does not fit the served model exactly, before touching it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, PreTrainedModel

from foveal.trainer.serving.weights import BadCheckpoint, apply_update, matched_update, read_checkpoint


def perturbed_copy(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    copy = type(model)(model.config).eval()
    return copy


def served(model_dir: Path, vision: bool) -> PreTrainedModel:
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    return auto.from_pretrained(model_dir).eval()


@pytest.mark.parametrize(("family", "vision"), [("qwen2_5_vl", True), ("qwen3", False)])
@pytest.mark.parametrize("shard_size", [None, "20KB"])
def test_a_saved_model_replaces_the_served_weights_exactly(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, family: str, vision: bool, shard_size: str | None
) -> None:
    model = served(tiny_model_dir(family), vision)
    new = perturbed_copy(model, seed=99)
    new.save_pretrained(tmp_path, **({"max_shard_size": shard_size} if shard_size else {}))
    assert shard_size is None or (tmp_path / "model.safetensors.index.json").is_file()
    apply_update(model, matched_update(model, read_checkpoint(tmp_path)))
    for (name, got), expected in zip(model.state_dict().items(), new.state_dict().values(), strict=True):
        assert torch.equal(got, expected), name
    if not vision:  # tied: the head still shares the embedding's storage
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_module_state_dict_keys_are_accepted_too(tiny_model_dir: Callable[[str], Path]) -> None:
    model = served(tiny_model_dir("qwen2_5_vl"), True)
    state = {k: v.clone() + 1 for k, v in perturbed_copy(model, 3).state_dict().items()}
    apply_update(model, matched_update(model, state))
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])


def test_bad_checkpoints_are_refused_naming_the_key(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    model = served(tiny_model_dir("qwen2_5_vl"), True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(model.state_dict())
    with pytest.raises(BadCheckpoint, match="unknown keys") as unknown:
        matched_update(model, {**state, "model.extra.weight": torch.zeros(2)})
    assert unknown.value.field == "weights['model.extra.weight']"
    with pytest.raises(BadCheckpoint, match="missing"):
        matched_update(model, {k: v for k, v in state.items() if k != "lm_head.weight"})
    with pytest.raises(BadCheckpoint, match="shape"):
        matched_update(model, {**state, "lm_head.weight": state["lm_head.weight"][:, :3]})
    save_file({"state/x/exp_avg": torch.zeros(1)}, tmp_path / "optimizer.safetensors")
    with pytest.raises(BadCheckpoint, match="model.safetensors") as only_optimizer:
        read_checkpoint(tmp_path)
    assert only_optimizer.value.field == "path"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
