"""The model side of the engine: prefill one prompt, then decode one token for every row of the batch.

Positions are always passed explicitly, so the model never falls back on state it keeps between calls
(Qwen-VL caches its rope offsets on the module, which would leak from one request into the next). A
prompt's positions come from the trainer's own scheme (`foveal.trainer.data.positions.position_scheme`,
the model family's), so sampling and training number tokens identically. After the prompt, every new token
of a sequence takes the next position on all rope rows, as in the model's own `generate`. The rows of a
batch are left-padded; the attention mask hides the padding.

Every prompt starts a plain `DynamicCache()`: full-attention layers only, even for a model with sliding-window
layers (Gemma 3), whose own cache would keep only the window and could not be left-padded and joined
(`foveal.trainer.serving.engine.kv`). The window is still honoured: transformers' sliding-window mask limits
those layers to the last `sliding_window` positions, whatever the cache holds. A model whose images attend both
ways gets their `token_type_ids` at prefill, as in training (`foveal.trainer.model.forward.image_block_inputs`)
and in its own `generate`; decoded tokens are text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.model.forward import image_block_inputs
from foveal.trainer.serving.engine.kv import PaddedCache


@dataclass
class Prefill:
    """A prompt run through the model: its cache (one row), the logits after its last token, and the
    position the first sampled token takes."""

    padded: PaddedCache
    logits: torch.Tensor
    """[V] fp32."""
    next_position: int


class ModelRunner:
    """Forward passes of one causal (vision-)language model on one device, without autograd."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.scheme: PositionScheme = position_scheme(model)

    @torch.inference_mode()
    def prefill(self, prompt_ids: tuple[int, ...], pixel_kwargs: Mapping[str, torch.Tensor]) -> Prefill:
        input_ids = torch.tensor(prompt_ids, dtype=torch.long)
        # Positions on the CPU, from CPU tensors, exactly as the trainer's collate computes them.
        positions = self.scheme.sample_positions("request", input_ids, pixel_kwargs)
        rope = positions.view(-1, len(prompt_ids))[-self.scheme.rope_rows :].to(self.device)
        images = {name: tensor.to(self.device) for name, tensor in pixel_kwargs.items()}
        mask = torch.ones(1, len(prompt_ids), dtype=torch.long, device=self.device)
        ids = input_ids.view(1, -1).to(self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=self._batched(rope.unsqueeze(-2)),
            past_key_values=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
            **images,
            **image_block_inputs(self.model, ids),
        )
        return Prefill(PaddedCache(out.past_key_values, mask), out.logits[0, -1].float(), int(rope.max()) + 1)

    @torch.inference_mode()
    def decode(self, padded: PaddedCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits `[B, V]` (fp32) for one new token per row; the cache and its mask grow by one column."""
        rows = padded.rows
        padded.mask = torch.cat([padded.mask, torch.ones(rows, 1, dtype=torch.long, device=self.device)], dim=1)
        out = self.model(
            input_ids=tokens.view(rows, 1),
            attention_mask=padded.mask,
            position_ids=self._batched(positions.view(1, rows, 1)),
            past_key_values=padded.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def _batched(self, rope: torch.Tensor) -> torch.Tensor:
        """`[rope_rows or 1, B, L]` -> what the model takes: `[rope_rows, B, L]`, or `[B, L]` for one row."""
        if self.scheme.rope_rows > 1:
            return rope.expand(self.scheme.rope_rows, -1, -1)
        return rope[0]
