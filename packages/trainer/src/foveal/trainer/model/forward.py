"""Run a model on one packed row.

`packed_logits` is the only place that turns a `PackedBatch` into model inputs, so the conditions that keep
attention inside samples (no attention mask, no KV cache, the boundary row present; see
`foveal.trainer.model.attention`) hold for every caller. Labels never go to the model: its built-in loss
shifts over the whole row and would make each sample's first token a target of the previous sample; the
caller scores `batch.labels` (`foveal.trainer.training.loss`). Under flex attention the row is padded to its length
bucket here (`foveal.trainer.model.flex_padding`) and only the real tokens' logits come back, so SFT, RL
and the Tinker service get the padding without knowing of it. `packed_hidden` runs the same forward but
returns the real tokens' final hidden states instead, for the chunked loss (`foveal.trainer.training.chunked_ce`).
"""

from __future__ import annotations

import torch

from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.model.attention import check_boundaries, check_packed_attention
from foveal.trainer.model.flex_padding import pad_row, pad_token_id, row_length


def packed_inputs(model: torch.nn.Module, batch: PackedBatch) -> dict[str, torch.Tensor | bool | None]:
    """The model's keyword arguments for a packed row, padded to the flex bucket when the text model runs flex.

    The first `batch.num_tokens` positions of every output are the row's own; `logits_to_keep` asks the LM head
    for those only, so no logits are computed for the padding.
    """
    device = batch.input_ids.device
    check_packed_attention(model.config.get_text_config(), device, backward=torch.is_grad_enabled())
    check_boundaries(batch.position_ids, batch.cu_seqlens)
    length = row_length(model, batch.num_tokens, device)
    input_ids, position_ids = pad_row(batch.input_ids, batch.position_ids, length, pad_token_id(model))
    inputs: dict[str, torch.Tensor | bool | None] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": None,
        "use_cache": False,
    }
    if length > batch.num_tokens:
        inputs["logits_to_keep"] = torch.arange(batch.num_tokens, device=device)
    return inputs | dict(batch.pixel_kwargs)


def packed_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Logits `[1, T, vocab]` for a packed row, each position seeing only earlier tokens of its own sample.

    `batch` must already be on the model's device (`batch.to(device)`).
    """
    return model(**packed_inputs(model, batch)).logits[:, : batch.num_tokens]


def packed_hidden(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Final hidden states `[1, T, hidden]` (after the final norm) of a packed row, with no logits computed.

    The whole model runs, so its hooks (FSDP's gathers among them) run as for `packed_logits`; a pre-hook on
    the LM head keeps the head's input and hands the head an empty slice instead. The caller applies the
    head itself (`foveal.trainer.training.chunked_ce`).
    """
    kept: list[torch.Tensor] = []

    def keep_input(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        kept.append(args[0][:, : batch.num_tokens])
        return (args[0][:, :0], *args[1:])

    hook = model.get_output_embeddings().register_forward_pre_hook(keep_input)
    try:
        model(**packed_inputs(model, batch))
    finally:
        hook.remove()
    return kept[0]
