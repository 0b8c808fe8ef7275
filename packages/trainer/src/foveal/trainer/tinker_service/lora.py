"""LoRA adapters on a transformers model, added with forward hooks so the model's own weights keep their names.

A Tinker training client is created with a `LoraConfig` (rank, seed, and whether to adapt the MLP, the
attention and the unembedding). Each adapted `nn.Linear` of the text decoder gets `A` (rank x in, small
random) and `B` (out x rank, zeros), and its output gains `scale * x A^T B^T` with `scale = alpha / rank`,
so a fresh adapter leaves the model unchanged. The vision tower is never adapted, nor an unembedding tied
to the input embeddings (adapting one would silently change the other in the merged weights). `merged_state_dict`
folds the adapters into the weights (`W + scale * B A`), which is what a sampler checkpoint holds: it
loads with plain `from_pretrained`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSpec:
    """What to adapt and how: the client's LoraConfig plus the service's alpha."""

    rank: int
    alpha: float
    seed: int | None = None
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraAdapters(nn.Module):
    """The A/B pairs of one model, keyed by the adapted module's name, and the hooks that apply them."""

    def __init__(self, model: nn.Module, spec: LoraSpec) -> None:
        super().__init__()
        self.spec = spec
        self.targets = dict(_targets(model, spec))
        generator = torch.Generator().manual_seed(spec.seed if spec.seed is not None else 0)
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for name, linear in self.targets.items():
            key = _key(name)
            weight = linear.weight
            a = torch.empty(spec.rank, linear.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            self.a[key] = nn.Parameter(a.to(device=weight.device, dtype=weight.dtype))
            self.b[key] = nn.Parameter(torch.zeros(linear.out_features, spec.rank, device=weight.device, dtype=weight.dtype))
            linear.register_forward_hook(self._hook(key))

    def _hook(self, key: str):  # noqa: ANN202 - a torch hook
        def add_update(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            a, b = self.a[key], self.b[key]
            return output + (x.to(a.dtype) @ a.T @ b.T).to(output.dtype) * self.spec.scale

        return add_update

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with every adapted weight replaced by `W + scale * B A` (detached copies)."""
        state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        for name, linear in self.targets.items():
            key = _key(name)
            delta = (self.b[key].detach() @ self.a[key].detach()) * self.spec.scale
            state[f"{name}.weight"] = (linear.weight.detach() + delta.to(linear.weight.dtype)).clone()
        return state


def _targets(model: nn.Module, spec: LoraSpec) -> list[tuple[str, nn.Linear]]:
    """The adapted linears by their full module name: decoder attention/MLP projections and the unembedding."""
    names = {id(module): name for name, module in model.named_modules()}
    suffixes = (ATTENTION if spec.train_attn else ()) + (MLP if spec.train_mlp else ())
    decoder = model.get_decoder()
    chosen = [
        (names[id(module)], module)
        for name, module in decoder.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in suffixes
    ]
    head = model.get_output_embeddings()
    tied = isinstance(head, nn.Linear) and head.weight is model.get_input_embeddings().weight
    if spec.train_unembed and isinstance(head, nn.Linear) and not tied:
        chosen.append((names[id(head)], head))
    return chosen


def _key(module_name: str) -> str:
    """ParameterDict keys may not contain dots."""
    return module_name.replace(".", "__")
