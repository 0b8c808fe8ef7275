"""Run a model on one packed row.

`packed_logits` is the only place that turns a `PackedBatch` into model inputs, so the conditions that keep
attention inside samples (no attention mask, no KV cache, the boundary row present; see
`foveal.trainer.model.attention`) hold for every caller. Labels never go to the model: its built-in loss
shifts over the whole row and would make each sample's first token a target of the previous sample; the
caller scores `batch.labels` (`foveal.trainer.loss`).
"""

from __future__ import annotations

import torch

from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.model.attention import check_boundaries, check_packed_attention


def packed_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Logits `[1, T, vocab]` for a packed row, each position seeing only earlier tokens of its own sample.

    `batch` must already be on the model's device (`batch.to(device)`).
    """
    check_packed_attention(model.config.get_text_config())
    check_boundaries(batch.position_ids, batch.cu_seqlens)
    inputs: dict[str, torch.Tensor | bool | None] = {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "attention_mask": None,
        "use_cache": False,
    }
    if batch.pixel_values is not None:
        inputs |= {"pixel_values": batch.pixel_values, "image_grid_thw": batch.image_grid_thw}
    return model(**inputs).logits
