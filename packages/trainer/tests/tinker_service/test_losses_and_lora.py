"""Tinker losses against hand-computed values, and LoRA adapters against the plain model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from foveal.trainer.serving.errors import RequestError
from foveal.trainer.tinker_service.lora import LoraAdapters, LoraSpec
from foveal.trainer.tinker_service.losses import checked_config, cross_entropy, importance_sampling, loss_spec, ppo

LOGP = torch.log(torch.tensor([0.5, 0.25, 0.8]))
SAMPLED = torch.log(torch.tensor([0.25, 0.25, 0.4]))  # ratios 2, 1, 2
ADV = torch.tensor([1.0, -1.0, -2.0])


def test_cross_entropy_is_the_weighted_sum_of_negative_logprobs() -> None:
    value = cross_entropy(LOGP, {"weights": torch.tensor([1.0, 0.0, 2.0])}, {})
    assert float(value) == pytest.approx(-(torch.log(torch.tensor(0.5)) + 2 * torch.log(torch.tensor(0.8))).item())


def test_importance_sampling_weights_advantages_by_the_probability_ratio() -> None:
    value = importance_sampling(LOGP, {"logprobs": SAMPLED, "advantages": ADV}, {})
    assert float(value) == pytest.approx(-(2 * 1.0 + 1 * -1.0 + 2 * -2.0))


def test_ppo_takes_the_pessimistic_of_clipped_and_unclipped_terms() -> None:
    value = ppo(LOGP, {"logprobs": SAMPLED, "advantages": ADV}, {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2})
    # token 0: min(2*1, 1.2*1) = 1.2; token 1: min(-1, -1) = -1; token 2: min(2*-2, 1.2*-2) = -4
    assert float(value) == pytest.approx(-(1.2 - 1.0 - 4.0))
    defaults = ppo(LOGP, {"logprobs": SAMPLED, "advantages": ADV}, {})
    assert float(defaults) == pytest.approx(float(value))


def test_unknown_losses_and_config_keys_are_refused_by_name() -> None:
    with pytest.raises(RequestError) as unknown:
        loss_spec("cispo")
    assert unknown.value.field == "loss_fn" and unknown.value.status == 400
    with pytest.raises(RequestError) as key:
        checked_config(loss_spec("cross_entropy"), {"clip_low_threshold": 0.5})
    assert key.value.field == "loss_fn_config.clip_low_threshold"


def test_fresh_lora_leaves_the_model_unchanged_and_merging_equals_the_hooked_model(
    tiny_model_dir: Callable[[str], Path],
) -> None:
    folder = tiny_model_dir("qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    ids = torch.tensor([[5, 9, 33, 7, 2]])
    before = model(input_ids=ids).logits
    adapters = LoraAdapters(model, LoraSpec(rank=4, alpha=8.0, seed=3))
    names = set(adapters.targets)
    assert "lm_head" in names and not any("visual" in name for name in names)
    assert any(name.endswith("self_attn.q_proj") for name in names) and any(name.endswith("mlp.down_proj") for name in names)
    assert torch.equal(model(input_ids=ids).logits, before)
    with torch.no_grad():
        for b in adapters.b.values():
            b.normal_(std=0.05)
    hooked = model(input_ids=ids).logits
    assert not torch.allclose(hooked, before)
    plain = AutoModelForImageTextToText.from_pretrained(folder).eval()
    plain.load_state_dict(adapters.merged_state_dict(model))
    assert torch.allclose(plain(input_ids=ids).logits, hooked, atol=1e-5)


def test_lora_respects_the_client_choice_of_layers(tiny_model_dir: Callable[[str], Path]) -> None:
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    adapters = LoraAdapters(model, LoraSpec(rank=2, alpha=2.0, train_mlp=False, train_unembed=False))
    assert adapters.targets and all(name.rsplit(".", 1)[-1] in {"q_proj", "k_proj", "v_proj", "o_proj"} for name in adapters.targets)
