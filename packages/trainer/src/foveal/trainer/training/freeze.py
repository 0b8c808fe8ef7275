"""Keeping a VLM's vision side fixed while its language model trains (`[trainer].freeze_vision`).

The vision tower and its projector are found by the attribute names transformers gives them on the inner
model (`visual` in Qwen-VL, whose merger lives inside it; `vision_tower` + `multi_modal_projector` in
LLaVA-style models; `vision_model` + `connector` in Idefics3), so no family needs its own code here.
"""

from __future__ import annotations

import torch

from foveal.renderers.errors import ContractError

VISION_MODULES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector")
"""Attribute names of vision-side modules, looked up on the model and on its inner `model`."""


def vision_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The vision tower and projector modules of `model` (empty for a text-only model)."""
    owners = [model, getattr(model, "model", None)]
    found = [getattr(owner, name, None) for owner in owners if owner is not None for name in VISION_MODULES]
    unique = {id(module): module for module in found if isinstance(module, torch.nn.Module)}
    return list(unique.values())


def freeze_vision(model: torch.nn.Module) -> int:
    """Stop gradients to the vision side of `model`; returns how many parameters were frozen.

    A model without a vision side is refused (ContractError naming the setting and the model class)."""
    modules = vision_modules(model)
    if not modules:
        raise ContractError("trainer.freeze_vision", type(model).__name__, "a model with a vision tower")
    frozen = 0
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen
