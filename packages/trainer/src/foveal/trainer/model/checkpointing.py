"""Activation checkpointing by layer: `[model].activation_checkpointing = k` recomputes every k-th layer.

A checkpointed layer keeps only its input for the backward pass and runs its forward again there: about a third
more compute for that layer, and its activations (for a 3B model, ~120 KB per token per decoder layer in bf16)
never stay resident. Checkpointing every layer (k = 1) is the least memory; every second layer (k = 2) keeps
half the activations and pays half the recompute; 0 is off. The choice applies to each stack of layers alone
(the text model's decoder layers and the vision tower's blocks), counted from its first layer.

transformers' `gradient_checkpointing_enable` arms every `GradientCheckpointingLayer`; the layers not chosen
are then disarmed one by one (the flag those layers read on each call), so the model classes stay as they are.
"""

from __future__ import annotations

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from foveal.renderers.errors import ContractError


def checkpointed(layer_index: int, every: int) -> bool:
    """Whether the layer at `layer_index` of its stack is recomputed under the setting `every` (0 = none)."""
    return every > 0 and layer_index % every == 0


def layer_stacks(model: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """The model's stacks of checkpointable layers (decoder layers, vision blocks), in module order."""
    return [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.ModuleList) and any(isinstance(m, GradientCheckpointingLayer) for m in module)
    ]


def set_activation_checkpointing(model: torch.nn.Module, every: int) -> int:
    """Checkpoint every `every`-th layer of each stack (0: none); returns how many layers are checkpointed."""
    if every < 0:
        raise ContractError("model.activation_checkpointing", every, "0 (off) or k >= 1 (every k-th layer)")
    if every == 0:
        if getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
        return 0
    if not getattr(model, "supports_gradient_checkpointing", False):
        expected = f"0: {type(model).__name__} does not support activation checkpointing"
        raise ContractError("model.activation_checkpointing", every, expected)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    count = 0
    for stack in layer_stacks(model):
        for index, layer in enumerate(stack):
            layer.gradient_checkpointing = checkpointed(index, every)
            count += layer.gradient_checkpointing
    return count
