"""The frozen target: context features of packed rows (images included), and its greedy continuations.

`capture` runs the target's base model (no LM head: a `[T, vocab]` tensor would dwarf everything else) on
a packed row exactly as training runs it (`foveal.trainer.model.forward`'s conditions: no attention mask, no
cache, per-sample positions from the model family's scheme, the family's image kwargs for the row's
images), with forward hooks on the configured decoder layers. The hook of layer i sees that layer's
output, which transformers' `output_hidden_states` would list at index i + 1 (DFlash's offset). Only the
captured layers are kept, concatenated in `layer_ids` order into `[T, len(layer_ids) * hidden]`.

`capture` builds the row's inputs with `packed_inputs`, the same function every training forward uses (its
checks, and under flex attention the bucket padding, whose positions are cut off the features).

`greedy_continuations` is `generate` with sampling off over a left-padded batch of prompts (the attention
mask tells a family's rope index where each prompt starts), which handles the KV cache; the hooks
are attached only during `capture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from foveal.trainer.data.adapters import PixelKwargs, concat_pixel_kwargs
from foveal.trainer.data.collate import Packable, PackedBatch
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.dflash.weights import TargetWeightError, TargetWeights, resolve_target_weights
from foveal.trainer.training.distributed import decoder_layers
from foveal.trainer.model.forward import packed_inputs


@dataclass
class FrozenTarget:
    """A target model in eval mode without gradients, the layers it exposes and the weights the draft shares."""

    model: torch.nn.Module
    layer_ids: tuple[int, ...]
    weights: TargetWeights
    positions: PositionScheme

    @classmethod
    def wrap(cls, model: torch.nn.Module, layer_ids: Sequence[int], embed_path: str, lm_head_path: str) -> FrozenTarget:
        """Freeze `model` and check that every layer id names one of its decoder layers."""
        model.eval().requires_grad_(False)
        depth = len(decoder_layers(model))
        if not layer_ids or any(not 0 <= i < depth for i in layer_ids):
            raise TargetWeightError("dflash.target_layer_ids", list(layer_ids), f"indices in 0..{depth - 1}")
        weights = resolve_target_weights(model, embed_path, lm_head_path)
        return cls(model, tuple(layer_ids), weights, position_scheme(model))

    @property
    def device(self) -> torch.device:
        return self.weights.embed.device

    @torch.no_grad()
    def capture(self, batch: PackedBatch) -> torch.Tensor:
        """`[T, len(layer_ids) * hidden]` features of a packed row already on the target's device."""
        inputs = packed_inputs(self.model, batch)  # flex rows come padded to their bucket; cut back below
        inputs.pop("logits_to_keep", None)  # the base model computes no logits
        inputs |= self._images(batch.pixel_kwargs)
        layers = decoder_layers(self.model)
        seen: dict[int, torch.Tensor] = {}
        hooks = [layers[i].register_forward_hook(_keeper(seen, i)) for i in self.layer_ids]
        try:
            self.model.model(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
        features = torch.cat([seen[i] for i in self.layer_ids], dim=-1)
        return features.reshape(-1, features.shape[-1])[: batch.num_tokens]

    @torch.no_grad()
    def greedy_continuations(
        self, prompts: Sequence[Packable], max_new_tokens: int, stop_ids: Sequence[int]
    ) -> list[list[int]]:
        """The target's greedy tokens after each prompt, in one `generate` over the left-padded batch.

        Each continuation ends at (and keeps) its first stop token, or at `max_new_tokens`; the padding
        `generate` writes after a finished row is cut off with it.
        """
        width = max(len(prompt.token_ids) for prompt in prompts)
        pad = self.weights.pad_token_id or 0
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt.token_ids) :] = torch.as_tensor(prompt.token_ids, dtype=torch.long)
            mask[row, width - len(prompt.token_ids) :] = 1
        inputs: dict[str, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        inputs |= self._images(concat_pixel_kwargs([prompt.pixel_kwargs for prompt in prompts]))
        out = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(stop_ids) or None,
            pad_token_id=pad,
            use_cache=True,
        )
        return [_through_first_stop(row, set(stop_ids)) for row in out[:, width:].tolist()]

    def _images(self, pixel_kwargs: PixelKwargs) -> dict[str, torch.Tensor]:
        """Image kwargs on the target's device, floating ones (pixels) in its weights' dtype."""
        embed = self.weights.embed
        return {
            name: tensor.to(embed.device, embed.dtype if tensor.is_floating_point() else tensor.dtype)
            for name, tensor in pixel_kwargs.items()
        }


def _through_first_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """`tokens` up to and including the first stop token (all of them when none is there)."""
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: index + 1]
    return tokens


def _keeper(seen: dict[int, torch.Tensor], index: int) -> Any:
    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        seen[index] = output[0] if isinstance(output, tuple) else output

    return keep
