"""The frozen target: context features of packed rows (images included), and its greedy continuations.

`capture` runs the target's base model (no LM head: a `[T, vocab]` tensor would dwarf everything else) on
a packed row exactly as training runs it (`foveal.trainer.model.forward`'s conditions: no attention mask, no
cache, per-sample positions from the model's own mrope index, `pixel_values` and `image_grid_thw` for the
row's images), with forward hooks on the configured decoder layers. The hook of layer i sees that layer's
output, which transformers' `output_hidden_states` would list at index i + 1 (DFlash's offset). Only the
captured layers are kept, concatenated in `layer_ids` order into `[T, len(layer_ids) * hidden]`.

`greedy_continuation` is `generate` with sampling off, which handles the KV cache and the mrope position
offsets of the Qwen-VL families; the hooks are attached only during `capture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from foveal.trainer.data.collate import Packable, PackedBatch
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.dflash.weights import TargetWeightError, TargetWeights, resolve_target_weights
from foveal.trainer.distributed import decoder_layers
from foveal.trainer.model.attention import check_boundaries, check_packed_attention


@dataclass
class FrozenTarget:
    """A target model in eval mode without gradients, the layers it exposes and the weights the draft shares."""

    model: torch.nn.Module
    layer_ids: tuple[int, ...]
    weights: TargetWeights
    positions: PositionScheme

    @classmethod
    def wrap(
        cls, model: torch.nn.Module, layer_ids: Sequence[int], embed_path: str, lm_head_path: str
    ) -> FrozenTarget:
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
        check_packed_attention(self.model.config.get_text_config())
        check_boundaries(batch.position_ids, batch.cu_seqlens)
        layers = decoder_layers(self.model)
        seen: dict[int, torch.Tensor] = {}
        hooks = [layers[i].register_forward_hook(_keeper(seen, i)) for i in self.layer_ids]
        inputs: dict[str, Any] = {
            "input_ids": batch.input_ids,
            "position_ids": batch.position_ids,
            "attention_mask": None,
            "use_cache": False,
        }
        if batch.pixel_values is not None:
            pixels = batch.pixel_values.to(self.weights.embed.dtype)
            inputs |= {"pixel_values": pixels, "image_grid_thw": batch.image_grid_thw}
        try:
            self.model.model(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat([seen[i] for i in self.layer_ids], dim=-1).reshape(batch.num_tokens, -1)

    @torch.no_grad()
    def greedy_continuation(self, sample: Packable, max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        """The target's greedy tokens after `sample`'s tokens (a prompt), ending at a stop token or the limit."""
        ids = torch.as_tensor(sample.token_ids, dtype=torch.long, device=self.device)[None]
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if sample.pixel_values is not None:
            pixels = sample.pixel_values.to(self.device, self.weights.embed.dtype)
            inputs |= {"pixel_values": pixels, "image_grid_thw": sample.image_grid_thw.to(self.device)}
        out = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(stop_ids) or None,
            pad_token_id=self.weights.pad_token_id,
            use_cache=True,
        )
        return out[0, ids.shape[1] :].tolist()


def _keeper(seen: dict[int, torch.Tensor], index: int) -> Any:
    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        seen[index] = output[0] if isinstance(output, tuple) else output

    return keep
