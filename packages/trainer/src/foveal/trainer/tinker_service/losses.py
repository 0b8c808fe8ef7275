"""Tinker's built-in losses as pure functions of one datum's target logprobs and its `loss_fn_inputs`.

Every loss is a SUM over the datum's tokens (Tinker does not normalize; the client chooses weights or
advantages to scale it), and the loss of a request is the sum over its datums:
  cross_entropy        -sum(weights * logp)
  importance_sampling  -sum(exp(logp - sampling_logp) * advantages)
  ppo                  -sum(min(ratio * advantages, clip(ratio, low, high) * advantages)), ratio = exp(logp - sampling_logp)
`logp` is the trained model's logprob of `target_tokens[i]` at position i; `sampling_logp` is the
datum's `logprobs` input (what the sampler reported). PPO's thresholds come from `loss_fn_config`
(`clip_low_threshold`, `clip_high_threshold`; 0.8 and 1.2 when absent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from foveal.trainer.serving.errors import invalid

LossInputs = Mapping[str, torch.Tensor]
PPO_CLIP_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}


@dataclass(frozen=True)
class LossSpec:
    """One named loss: the float inputs it needs besides `target_tokens`, the config keys it takes, its function."""

    inputs: tuple[str, ...]
    config_keys: tuple[str, ...]
    fn: Callable[[torch.Tensor, LossInputs, Mapping[str, float]], torch.Tensor]


def cross_entropy(logp: torch.Tensor, inputs: LossInputs, config: Mapping[str, float]) -> torch.Tensor:
    return -(inputs["weights"] * logp).sum()


def importance_sampling(logp: torch.Tensor, inputs: LossInputs, config: Mapping[str, float]) -> torch.Tensor:
    ratio = torch.exp(logp - inputs["logprobs"])
    return -(ratio * inputs["advantages"]).sum()


def ppo(logp: torch.Tensor, inputs: LossInputs, config: Mapping[str, float]) -> torch.Tensor:
    settings = {**PPO_CLIP_DEFAULTS, **config}
    ratio = torch.exp(logp - inputs["logprobs"])
    clipped = torch.clamp(ratio, settings["clip_low_threshold"], settings["clip_high_threshold"])
    advantages = inputs["advantages"]
    return -torch.minimum(ratio * advantages, clipped * advantages).sum()


LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(("weights",), (), cross_entropy),
    "importance_sampling": LossSpec(("logprobs", "advantages"), (), importance_sampling),
    "ppo": LossSpec(("logprobs", "advantages"), tuple(PPO_CLIP_DEFAULTS), ppo),
}


def loss_spec(name: str) -> LossSpec:
    """The named loss, or a 400 naming `loss_fn` and the losses this service computes."""
    spec = LOSSES.get(name)
    if spec is None:
        raise invalid("loss_fn", f"one of {sorted(LOSSES)} (got {name!r})")
    return spec


def checked_config(spec: LossSpec, config: Mapping[str, float | str]) -> dict[str, float]:
    """The loss config with only the keys `spec` takes, all numbers; anything else is a 400 naming the key."""
    for key, value in config.items():
        if key not in spec.config_keys:
            raise invalid(f"loss_fn_config.{key}", f"one of {list(spec.config_keys)} for this loss")
        if isinstance(value, str):
            raise invalid(f"loss_fn_config.{key}", f"a number (got {value!r})")
    return {key: float(value) for key, value in config.items()}
