"""Keep attention inside each sample of a packed row.

The route is the one transformers 5.19 itself honours for these models: no attention mask, no cache, and a
token-position row that restarts at 0 at every sample boundary (`[1, T]` for text models, row 0 of the
`[4, 1, T]` mrope ids for the Qwen-VL families). From that row
  - eager / sdpa: `masking_utils.create_causal_mask` finds the packed samples
    (`find_packed_sequence_indices`: a new sample wherever the position does not grow by one) and ANDs a
    same-sample mask into the causal mask, giving a block-diagonal causal mask in each backend's format;
  - flash_attention_2: `_flash_attention_forward` sees the positions restart and runs the varlen kernel with
    cu_seqlens taken where the position is 0.
Passing `cu_seq_lens_q/k` ourselves is not an option for the VLMs: under flash_attention_2 the forward kwargs
also reach the vision tower, whose attention passes its own `cu_seq_lens_q` and would fail on the duplicate
keyword (modeling_qwen2_5_vl.py, Qwen2_5_VLVisionAttention). A 4-D mask of our own would be honoured by
eager/sdpa only, and would need each backend's mask format.

Both detections are silently skipped when a 2-D attention mask or a KV cache is present, and the Qwen-VL
text models ignore boundaries when given only the three mrope rows. `packed_logits` never passes a mask or a
cache, and `check_boundaries` refuses the three-row form and proves that the position row implies exactly
our `cu_seqlens`.
The vision towers need nothing: they attend within each image by `image_grid_thw`, packed or not.
"""

from __future__ import annotations

import torch

from foveal.renderers.errors import ContractError

# Attention implementations that build per-sample attention from the position row (see above). eager and sdpa
# are proven by tests/test_packed_equivalence.py; flash_attention_2 takes transformers' varlen path from the
# same row but is untested here (flash-attn is installed on none of our machines).
PACKED_ATTENTION = frozenset({"eager", "sdpa", "flash_attention_2"})
MROPE_ROWS = 4  # text row + temporal, height, width


def check_packed_attention(config: object) -> None:
    """Refuse an attention implementation not known to honour packed boundaries (flex, paged, custom)."""
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in PACKED_ATTENTION:
        raise ContractError("attn_implementation", implementation, f"one of {sorted(PACKED_ATTENTION)}")


def boundary_row(position_ids: torch.Tensor) -> torch.Tensor:
    """The `[1, T]` token-position row transformers finds sample boundaries from."""
    if position_ids.ndim == 2 and position_ids.shape[0] == 1:
        return position_ids
    if position_ids.ndim == 3 and position_ids.shape[:2] == (MROPE_ROWS, 1):
        return position_ids[0]
    raise ContractError("position_ids", list(position_ids.shape), f"[1, T] or [{MROPE_ROWS}, 1, T]")


def segment_starts(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """For every token, the index of the first token of its sample: `[T]`."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.long)
    return torch.repeat_interleave(cu_seqlens[:-1].to(torch.long), lengths)


def check_boundaries(position_ids: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    """The position row must count 0, 1, ... within each sample, so transformers splits exactly at cu_seqlens."""
    row = boundary_row(position_ids)[0]
    if int(cu_seqlens[-1]) != row.shape[0] or int(cu_seqlens[0]) != 0:
        raise ContractError("cu_seqlens", cu_seqlens.tolist(), f"0 ... {row.shape[0]} (the packed length)")
    expected = torch.arange(row.shape[0], device=row.device) - segment_starts(cu_seqlens).to(row.device)
    if not torch.equal(row, expected):
        first = int((row != expected).nonzero()[0])
        raise ContractError("position_ids", f"{int(row[first])} at token {first}", f"{int(expected[first])}")
