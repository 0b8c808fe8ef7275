"""`[model].kernels`: liger-kernel's fused RMSNorm and SwiGLU in place of the model's own, on CUDA.

Each RMSNorm and each SwiGLU MLP of the loaded model (text and vision alike) gets a forward that calls liger's
Triton function on the module's own weights, so parameters, state dicts and checkpoints are untouched and no
transformers class or module-level function is replaced (liger's `apply_liger_kernel_to_*` patches those for
every model in the process). A module is recognised by what it computes, not its class name: an RMSNorm has a
1-D `weight` and a `variance_epsilon`; a SwiGLU MLP has `gate_proj`, `up_proj`, `down_proj` and a SiLU `act_fn`.
liger's M-RoPE kernel is not used: transformers 5.x applies the M-RoPE sections inside the rotary embedding, and
the rotation left in attention is a few elementwise ops on q and k.

Why liger and not our own Triton: it is a maintained, tested kernel library (pure Python + Triton, a 0.9 MB wheel)
and the optional `gpu` extra of foveal-trainer. Without it, `auto` keeps the model's own modules.
"""

from __future__ import annotations

import functools
import importlib.util
import types
from typing import Any

import torch

from foveal.renderers.errors import ContractError

LIGER = "liger"
LIGER_HINT = "install the foveal-trainer[gpu] extra (liger-kernel)"


def resolve_kernels(setting: str, device: torch.device) -> str:
    """The kernels a setting means on `device`: auto is liger on CUDA when liger-kernel is installed, else torch."""
    if setting == "auto":
        return LIGER if device.type == "cuda" and liger_installed() else "torch"
    if setting == LIGER and device.type != "cuda":
        raise ContractError("model.kernels", setting, f"torch or auto on {device.type} (liger's kernels need CUDA)")
    if setting == LIGER and not liger_installed():
        raise ContractError("model.kernels", setting, f"torch or auto, or {LIGER_HINT}")
    return setting


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def apply_kernels(model: torch.nn.Module, setting: str, device: torch.device) -> dict[str, int]:
    """Give the model the kernels of a `[model].kernels` setting (switching back and forth is allowed); counts
    of the modules now on liger."""
    counts = {"rms_norm": 0, "swiglu": 0}
    fused = resolve_kernels(setting, device) == LIGER
    for module in model.modules():
        kind = "rms_norm" if is_rms_norm(module) else "swiglu" if is_swiglu(module) else None
        if kind is None:
            continue
        module.__dict__.pop("forward", None)  # the class's own forward again
        if fused:
            module.forward = types.MethodType(_liger_forward(kind), module)
            counts[kind] += 1
    return counts


def _liger_forward(kind: str) -> Any:
    from liger_kernel.ops import LigerRMSNormFunction, LigerSiLUMulFunction

    return _rms_norm_forward(LigerRMSNormFunction) if kind == "rms_norm" else _swiglu_forward(LigerSiLUMulFunction)


def is_rms_norm(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.nn.Parameter) and weight.ndim == 1 and hasattr(module, "variance_epsilon")


def is_swiglu(module: torch.nn.Module) -> bool:
    projections = ("gate_proj", "up_proj", "down_proj")
    linear = all(isinstance(getattr(module, name, None), torch.nn.Linear) for name in projections)
    return linear and isinstance(getattr(module, "act_fn", None), silu_classes())


@functools.cache
def silu_classes() -> tuple[type, ...]:
    """The SiLU modules models use as `act_fn`: torch's and transformers' (`ACT2FN["silu"]`)."""
    from transformers.activations import ACT2FN

    return (torch.nn.SiLU, type(ACT2FN["silu"]))


def _rms_norm_forward(function: Any) -> Any:
    def forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        # Llama casting: normalize in fp32, scale by the weight in the input's dtype (as the Qwen/Llama RMSNorm).
        return function.apply(hidden_states, self.weight, self.variance_epsilon, 0.0, "llama", True, None)

    return forward


def _swiglu_forward(function: Any) -> Any:
    def forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(function.apply(self.gate_proj(hidden_states), self.up_proj(hidden_states)))

    return forward
