"""Optimizer, learning-rate schedule and gradient clipping for the training loops.

AdamW uses the fused CUDA kernel when every parameter lives on CUDA (one launch per step instead of one
per tensor) and the multi-tensor `foreach` path elsewhere. The schedule is a `LambdaLR` multiplier, so its
whole state is `last_epoch` and it resumes exactly from a checkpoint: linear warmup from 0 to the peak
over `warmup_steps`, then cosine, linear or constant decay to `min_lr_ratio * lr` at `total_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from foveal.configs.trainer import OptimConfig, ScheduleConfig
from foveal.renderers.errors import ContractError

from foveal.trainer.training.freeze import vision_modules


class ScheduleError(ValueError):
    """A schedule that cannot be built for this run; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; fused on CUDA, foreach elsewhere."""
    params = [p for p in model.parameters() if p.requires_grad]
    on_cuda = bool(params) and all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(
        parameter_groups(model, config),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=True if on_cuda else None,
        foreach=None if on_cuda else True,
    )


def parameter_groups(model: torch.nn.Module, config: OptimConfig) -> list[dict[str, object]]:
    """The trainable parameters as one group, or two when the vision side has its own lr (`vision_lr_scale`):
    a randomly initialized or task-foreign vision tower may need to move faster than the language model to
    separate what the task tells apart, without the language model's lr breaking its output format."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.vision_lr_scale == 1.0:
        return [{"params": trainable}]
    modules = vision_modules(model)
    if not modules:
        raise ContractError("trainer.optim.vision_lr_scale", type(model).__name__, "a model with a vision tower")
    vision = {id(p) for module in modules for p in module.parameters()}
    groups = [
        {"params": [p for p in trainable if id(p) not in vision]},
        {"params": [p for p in trainable if id(p) in vision], "lr": config.lr * config.vision_lr_scale},
    ]
    return [group for group in groups if group["params"]]  # a frozen vision side leaves its group empty


def lr_multiplier(config: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """The factor of the peak lr at a step count (the number of optimizer steps taken so far).

    Step 0 of a run with warmup trains at lr / (warmup + 1) rather than 0, so no step is wasted.
    """
    if total_steps < 1:
        raise ScheduleError("total_steps", total_steps, "at least 1 optimizer step")
    if config.warmup_steps > total_steps:
        raise ScheduleError(
            "trainer.schedule.warmup_steps", config.warmup_steps, f"at most the run's {total_steps} steps"
        )
    warmup, floor = config.warmup_steps, config.min_lr_ratio
    decay_steps = max(total_steps - warmup, 1)
    shape = _DECAY_SHAPES[config.kind]

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / decay_steps, 1.0)
        return floor + (1.0 - floor) * shape(progress)

    return multiplier


_DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
    "constant": lambda progress: 1.0,
}
"""How the multiplier falls from 1 to 0 as decay progresses from 0 to 1 (then mapped onto [floor, 1])."""


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int) -> LambdaLR:
    """A LambdaLR following `lr_multiplier`; call `.step()` once after each optimizer step."""
    return LambdaLR(optimizer, lr_multiplier(config, total_steps))


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to `max_norm` and return the norm before clipping.

    Under FSDP2 the gradients are DTensor shards; `clip_grad_norm_` then reduces the norm across ranks
    and returns a DTensor, which `full_tensor` turns into the global value every rank agrees on.
    """
    params = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
