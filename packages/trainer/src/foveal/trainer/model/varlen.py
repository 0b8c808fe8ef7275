"""Varlen attention: one kernel call per layer over every document of a packed row, or every window of a vision tower.

transformers calls `varlen_attention_forward` as an `AttentionInterface` function under `VARLEN_ATTENTION`, a
name containing "flash": only then do the Qwen-VL vision towers pass their window/image `cu_seq_lens_q/k` and
`max_length_q/k` in one call per layer (`is_flash_attention_requested`); under any other name they loop over the
windows in Python, one attention call each, and the training step becomes launch-bound.

Text layers get no cumulative lengths (passing `cu_seq_lens_q` as a forward kwarg would collide with the vision
tower's own, see `foveal.trainer.model.attention`), but every Qwen text attention receives the `position_ids`
row that restarts at 0 at each sample (Qwen-VL: the text row; Qwen3: through its kwargs). transformers' own
flash path cuts documents from that row with `prepare_fa_kwargs_from_position_ids`, and so do we, once per row
(`_row_documents` keeps the last row's result: the layers share one tensor, so a forward syncs the host once,
not once per layer). `create_causal_mask` builds no mask for this name (it is not an `AttentionMaskInterface`
key, so the mask passes through: None for packed rows), and any mask that does arrive is refused.

On CUDA with fp16/bf16 inputs the kernel is torch's `varlen_attn`; elsewhere sdpa runs once per document with
the same semantics, so CPU tests exercise this very function and its backward.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from typing import Any

import torch
from torch.nn import functional

from foveal.renderers.errors import ContractError

VARLEN_ATTENTION = "foveal_flash_varlen"
"""The name transformers knows the varlen route by ("flash" in it selects the vision towers' one-call path)."""
HALF = (torch.float16, torch.bfloat16)
# Keyword arguments this function cannot honour when set: (name, the value that means "off").
UNSUPPORTED = (("sliding_window", None), ("softcap", None), ("s_aux", None))


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each document: `[batch, heads, seq, dim]` in, `[batch, seq, heads, dim]` out (as flash)."""
    _refuse_unsupported(query, key, attention_mask, dropout, kwargs)
    cu_seqlens, max_length = _documents(query, kwargs)
    is_causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    q, k, v = (x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3]) for x in (query, key, value))
    if q.is_cuda and q.dtype in HALF:
        out = _varlen_kernel(q, k, v, cu_seqlens, max_length, scaling, causal)
    else:
        out = _sdpa_per_document(q, k, v, cu_seqlens, scaling, causal)
    return out.view(query.shape[0], query.shape[2], *out.shape[1:]), None


def _refuse_unsupported(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float, kwargs: dict[str, Any]
) -> None:
    if attention_mask is not None:
        raise ContractError("attention_mask", list(attention_mask.shape), "None (varlen attention takes packed rows)")
    if dropout:
        raise ContractError("attention_dropout", dropout, "0.0 under varlen attention")
    for name, off in UNSUPPORTED:
        if kwargs.get(name, off) is not off:
            raise ContractError(name, kwargs[name], f"{off} (not supported by varlen attention)")
    if key.shape[2] != query.shape[2]:
        raise ContractError("key length", key.shape[2], f"{query.shape[2]} (no KV cache under varlen attention)")


def _documents(query: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """`cu_seqlens` over the flattened `batch * seq` tokens and the longest document's length."""
    tokens = query.shape[0] * query.shape[2]
    position_ids = kwargs.get("position_ids")
    if kwargs.get("cu_seq_lens_q") is not None:  # vision tower: its images or windows
        return kwargs["cu_seq_lens_q"], int(kwargs["max_length_q"])
    if position_ids is None:  # no positions given: each row is one document
        cu_seqlens = torch.arange(0, tokens + 1, query.shape[2], dtype=torch.int32, device=query.device)
        return cu_seqlens, query.shape[2]
    if position_ids.numel() != tokens:  # text: documents restart at position 0
        raise ContractError("position_ids", list(position_ids.shape), f"{tokens} positions (batch x seq)")
    return _row_documents(position_ids)


@functools.lru_cache(maxsize=1)
def _row_documents(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """transformers' document split of a position row, kept for the row's tensor (tensors hash by identity)."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    (cu_seqlens, _), (max_length, _) = prepare_fa_kwargs_from_position_ids(position_ids)
    return cu_seqlens, int(max_length)


@functools.cache
def _kernel_parameters() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _varlen_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_length: int,
    scale: float | None,
    causal: bool,
) -> torch.Tensor:
    """torch's `varlen_attn` on `[tokens, heads, dim]`; K/V heads expanded where the kernel has no `enable_gqa`
    (torch 2.11), causality as `window_size` (2.11+) or `is_causal` (older)."""
    from torch.nn.attention.varlen import varlen_attn

    parameters = _kernel_parameters()
    options: dict[str, Any] = {"scale": scale}
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and "enable_gqa" in parameters:
        options["enable_gqa"] = True
    elif groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if "window_size" in parameters:
        options["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        options["is_causal"] = causal
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    q, k, v = (x.contiguous() for x in (q, k, v))  # the vision tower's values are a strided view of its qkv
    return varlen_attn(q, k, v, cu, cu, max_length, max_length, **options)


def _sdpa_per_document(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float | None, causal: bool
) -> torch.Tensor:
    """The same attention through sdpa, one call per document (CPU, fp32)."""
    gqa = q.shape[1] != k.shape[1]
    outputs = [
        functional.scaled_dot_product_attention(
            *(x[start:end].transpose(0, 1) for x in (q, k, v)), scale=scale, is_causal=causal, enable_gqa=gqa
        ).transpose(0, 1)
        for start, end in itertools.pairwise(cu_seqlens.tolist())
    ]
    return torch.cat(outputs)
