"""Pad packed rows to a few fixed lengths when the text model runs flex attention.

transformers runs torch's `flex_attention` through `torch.compile` (static shapes in 5.17), and torch compiles
`create_block_mask`; both guard on the row length. Every packed row has its own length, so on an H200 each
new row recompiled (~1 min), and past dynamo's `recompile_limit` (8 per function) flex fell back to the
unfused path that materializes the whole score matrix. Rounding each row up to a multiple of
`[model].flex_bucket_tokens` leaves at most ceil(budget / bucket) lengths, compiled once each.

The padding is one more sample at the end of the row: pad tokens at positions 0, 1, ... in every position
row (text-style mrope, no image placeholders), so transformers' packed-sequence detection (a new sample
wherever the position does not grow by one) makes it its own document. Being last, causality already hides
it from every real token, and the document mask hides the real tokens from it, so flex skips the blocks
between. It never reaches a label or a loss: only the model inputs are padded, and `packed_logits` returns
the real tokens' logits.

On CPU a flex row is also padded to a multiple of `CPU_FLEX_MULTIPLE`, bucket or not: torch 2.13's compiled
CPU flex kernel returned wrong outputs (or NaN) on a 2-core AVX2 machine for rows of 24-120 tokens whose
length is 8 more than a multiple of 16, against sdpa with the same document mask, each length compiled
afresh; every multiple of 16 up to 296 was right (on an AVX-512 host with torch 2.11, every multiple of 8 up
to 512 was right). CUDA rows are not affected and keep their bucket alone.
"""

from __future__ import annotations

import torch

from foveal.configs.model import ModelConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.model.attention import FLEX_ATTENTION

BUCKET_ATTRIBUTE = "foveal_flex_bucket_tokens"
"""Where `load_model` records `[model].flex_bucket_tokens` on the model, so every `packed_logits` caller sees it."""
DEFAULT_BUCKET = ModelConfig.model_fields["flex_bucket_tokens"].default


def bucket_length(length: int, bucket: int) -> int:
    """The smallest multiple of `bucket` that holds `length` tokens; `length` itself when `bucket` is 0.

    Rows of at most B tokens give at most ceil(B / bucket) lengths, none beyond B + bucket - 1.
    """
    if bucket < 0:
        raise ContractError("flex_bucket_tokens", bucket, "0 (off) or a positive number of tokens")
    if bucket == 0:
        return length
    return -(-length // bucket) * bucket


CPU_FLEX_MULTIPLE = 64
"""Flex rows on CPU are padded to a multiple of this at least (see the module docstring)."""


def row_length(model: torch.nn.Module, length: int, device: torch.device) -> int:
    """The length `packed_inputs` gives a row of `length` tokens: `length` itself unless the text model runs flex.

    Under flex: the bucket's multiple, and on CPU a multiple of `CPU_FLEX_MULTIPLE` as well.
    """
    if not runs_flex(model):
        return length
    length = bucket_length(length, flex_bucket(model))
    return bucket_length(length, CPU_FLEX_MULTIPLE) if device.type == "cpu" else length


def runs_flex(model: torch.nn.Module) -> bool:
    """Whether the text model runs flex attention now (read at each call: `set_attn_implementation` switches it)."""
    return getattr(model.config.get_text_config(), "_attn_implementation", None) == FLEX_ATTENTION


def set_flex_bucket(model: torch.nn.Module, tokens: int) -> None:
    """Make `packed_logits` pad `model`'s rows to multiples of `tokens` while its text model runs flex."""
    bucket_length(1, tokens)  # refuses a negative bucket here, not at the first forward
    setattr(model, BUCKET_ATTRIBUTE, tokens)


def flex_bucket(model: torch.nn.Module) -> int:
    """The bucket `packed_logits` pads to: 0 unless the text model runs flex attention now.

    Read at each call, so switching kernels (`set_attn_implementation`) switches padding with them; a model
    not loaded by `load_model` gets the `[model]` default.
    """
    if not runs_flex(model):
        return 0
    return int(getattr(model, BUCKET_ATTRIBUTE, DEFAULT_BUCKET))


def pad_token_id(model: torch.nn.Module) -> int:
    """The model's pad token, or 0 where it has none: the padding is never seen, so any non-image id serves."""
    pad = model.config.get_text_config().pad_token_id
    return 0 if pad is None else int(pad)


def pad_row(
    input_ids: torch.Tensor, position_ids: torch.Tensor, length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` `[1, T]` and `position_ids` (`[1, T]` or `[4, 1, T]`) extended to `length` by one pad sample."""
    extra = length - input_ids.shape[-1]
    if extra == 0:
        return input_ids, position_ids
    pad_ids = input_ids.new_full((1, extra), pad_id)
    positions = torch.arange(extra, dtype=position_ids.dtype, device=position_ids.device)
    pad_positions = positions.expand(*position_ids.shape[:-1], extra)
    return torch.cat([input_ids, pad_ids], -1), torch.cat([position_ids, pad_positions], -1)
