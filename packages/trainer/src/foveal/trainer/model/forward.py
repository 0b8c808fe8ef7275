"""Run a model on one packed row.

`packed_logits` is the only place that turns a `PackedBatch` into model inputs, so the conditions that keep
attention inside samples (no attention mask, no KV cache, the boundary row present; see
`foveal.trainer.model.attention`) hold for every caller. Labels never go to the model: its built-in loss
shifts over the whole row and would make each sample's first token a target of the previous sample; the
caller scores `batch.labels` (`foveal.trainer.training.loss`). Gemma 3 also gets `token_type_ids`, so each
image attends to itself both ways as in its own forward (`image_block_inputs`). Under flex attention the row is
padded to its length bucket here (`foveal.trainer.model.flex_padding`) and only the real tokens' logits come
back, so SFT, RL and the Tinker service get the padding without knowing of it. `packed_hidden` runs the same forward but
returns the real tokens' final hidden states instead, for the chunked loss (`foveal.trainer.training.chunked_ce`).
"""

from __future__ import annotations

from typing import Any

import torch

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.model.attention import (
    check_boundaries,
    check_image_block_attention,
    check_packed_attention,
    check_sink_attention,
    has_image_blocks,
)
from foveal.trainer.model.flex_padding import pad_row, pad_token_id, row_length


def packed_inputs(model: torch.nn.Module, batch: PackedBatch) -> dict[str, torch.Tensor | bool | None]:
    """The model's keyword arguments for a packed row, padded to the flex bucket when the text model runs flex.

    The first `batch.num_tokens` positions of every output are the row's own; `logits_to_keep` asks the LM head
    for those only, so no logits are computed for the padding.
    """
    device = batch.input_ids.device
    text_config = model.config.get_text_config()
    check_packed_attention(text_config, device, backward=torch.is_grad_enabled())
    check_image_block_attention(model.config, text_config._attn_implementation)
    check_sink_attention(model.config, text_config._attn_implementation)
    check_boundaries(batch.position_ids, batch.cu_seqlens)
    length = row_length(model, batch.num_tokens, device)
    input_ids, position_ids = pad_row(batch.input_ids, batch.position_ids, length, pad_token_id(model))
    inputs: dict[str, torch.Tensor | bool | None] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": positional_masks(model, input_ids, position_ids),
        "use_cache": False,
        **image_block_inputs(model, input_ids, batch.cu_seqlens),
    }
    if length > batch.num_tokens:
        inputs["logits_to_keep"] = torch.arange(batch.num_tokens, device=device)
    return inputs | dict(batch.pixel_kwargs)


MASKS_WITHOUT_POSITIONS = frozenset({"gpt_oss"})
"""`config.model_type`s whose forward builds its layers' masks without the position row (gpt-oss, transformers
5.19), so transformers would not find the packed samples there: their masks are built here instead."""


def positional_masks(
    model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor
) -> dict[str, Any] | None:
    """For `MASKS_WITHOUT_POSITIONS` models, the per-layer-type masks their forward accepts in place of
    `attention_mask`, built by the same transformers functions it calls, given the position row as the other
    models give it (a block-diagonal causal mask, the sliding window inside each sample); None for the others."""
    if model.config.model_type not in MASKS_WITHOUT_POSITIONS:
        return None
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    dtype = model.get_input_embeddings().weight.dtype
    shape_only = torch.empty((*input_ids.shape, 0), dtype=dtype, device=input_ids.device)  # batch, length, dtype
    arguments = {"config": model.config, "inputs_embeds": shape_only, "attention_mask": None,
                 "past_key_values": None, "position_ids": position_ids}  # fmt: skip
    return {
        "full_attention": create_causal_mask(**arguments),
        "sliding_attention": create_sliding_window_causal_mask(**arguments),
    }


def image_block_inputs(
    model: torch.nn.Module, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """`token_type_ids` (1 on image placeholders) for a model whose images attend both ways (Gemma 3), else nothing.

    transformers makes one bidirectional block of each run of image tokens (`get_block_sequence_ids_for_mask`), so
    a run that went on across a sample boundary of a packed row (`cu_seqlens`) would join two samples' images:
    such a row is refused.
    """
    if not has_image_blocks(model.config):
        return {}
    is_image = input_ids == model.config.image_token_id
    if cu_seqlens is not None and len(cu_seqlens) > 2:
        starts = cu_seqlens[1:-1].to(device=input_ids.device, dtype=torch.long)
        joined = is_image[..., starts - 1] & is_image[..., starts]
        if bool(joined.any()):
            where = int(starts[joined.view(-1, len(starts)).any(0)][0])
            expected = "a text token on one side of every sample boundary (each image its own bidirectional block)"
            raise ContractError("input_ids", f"image placeholders on both sides of token {where}", expected)
    return {"token_type_ids": is_image.long()}


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
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if softcap is not None:  # Gemma 2 style: tanh-capped logits, which the head alone does not give
        expected = "None: the chunked loss applies the LM head alone; set [trainer].loss_chunk_tokens = 0 for it"
        raise ContractError("final_logit_softcapping", softcap, expected)
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
