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
our `cu_seqlens`. gpt-oss's forward (transformers 5.19) builds its masks without the position row, so for it
`packed_inputs` builds them with the same transformers functions and the row (`forward.positional_masks`).
The vision towers need nothing: they attend within each image by `image_grid_thw`, packed or not.

Flex attention (`[model].attn_implementation = "flex_attention"`): with the same position row,
`create_causal_mask` builds a `BlockMask` of `causal AND same sample` (torch's `create_block_mask`, compiled),
so each sample attends only to itself, whole blocks outside the samples are skipped and the cost is the sum of
the per-sample squares, not the row's square (sdpa's dense boolean mask over a packed row is both quadratic in
the row and off sdpa's flash kernel). The attention itself is transformers' `flex_attention_forward`, which
wraps torch's `flex_attention` in `torch.compile`. transformers refuses "flex_attention" for the Qwen-VL
classes (`_supports_flex_attn` is False there, 5.17-5.19), so the same two transformers functions are
registered under our own name, `FLEX_ATTENTION`, and given to the text model only: the vision tower keeps sdpa
(under flex it would call the compiled kernel once per image window). torch's flex attention has no backward
on CPU, so training with it needs CUDA. Both the kernel and the mask builder compile per row length, so
`packed_logits` pads flex rows to a few lengths (`foveal.trainer.model.flex_padding`), and the registered mask
builder, `flex_document_mask`, gives a row of one sample the same mask function as a packed row, so it does not
compile a second time at the same length.

Gemma 3 (`IMAGE_BLOCK_MODELS`) attends both ways inside each image: its forward takes `token_type_ids` (1 on the
image's soft tokens, `foveal.trainer.model.forward.image_block_inputs`) and transformers'
`create_masks_for_vision_model` ORs "same image" (`blockwise_overlay`, one block per run of image tokens) into
the causal mask, then ANDs the sliding window (sliding layers) and the packed samples found from the position
row: `((causal AND same sample) OR same image)` on global layers, `(causal OR same image) AND window AND same
sample` on sliding ones. An image lies inside one sample, so this is each sample's own mask, and the window
compares distances, which packing does not change. eager and sdpa take that mask as a tensor, flex as a
`BlockMask` (the composed mask function). The varlen kernel (causal or not, per document) and
flash_attention_2 (transformers builds no mask for it) cannot express it, so `set_attention` and
`packed_inputs` refuse them for these models (`UnsupportedAttention`), and `auto` on CUDA gives them sdpa.

Varlen attention (`[model].attn_implementation = "varlen"`): `foveal.trainer.model.varlen` registered under
`VARLEN_ATTENTION` for the text model and the vision tower alike, one kernel call per layer over all documents
(text: cut where the position row restarts; vision: the tower's own window/image lengths). transformers cannot
load or `set_attn_implementation` a name containing "flash" that is not a flash-attn package or hub kernel (it
tries to import one), so `set_attention` writes our registered name into the configs itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from foveal.configs.errors import RunError
from foveal.renderers.errors import ContractError
from foveal.trainer.model.varlen import VARLEN_ATTENTION, varlen_attention_forward

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

FLEX_SETTING = "flex_attention"
"""The `[model].attn_implementation` value that selects flex attention."""
FLEX_ATTENTION = "foveal_flex"
"""The name transformers knows our flex route by (not containing "flex_attention", which it refuses for VLMs)."""
VARLEN_SETTING = "varlen"
"""The `[model].attn_implementation` value that selects varlen attention (`VARLEN_ATTENTION`)."""
# Attention implementations that build per-sample attention from the position row (see above). eager, sdpa,
# FLEX_ATTENTION and VARLEN_ATTENTION are proven by tests/model/test_packed_equivalence.py,
# tests/model/test_flex_attention.py and tests/model/test_varlen_attention.py;
# flash_attention_2 takes transformers' varlen path from the same row but is untested here (flash-attn is
# installed on none of our machines).
PACKED_ATTENTION = frozenset({"eager", "sdpa", "flash_attention_2", FLEX_ATTENTION, VARLEN_ATTENTION})
NO_CPU_BACKWARD = frozenset({FLEX_ATTENTION})
IMAGE_BLOCK_MODELS = frozenset({"gemma3"})
"""`config.model_type`s whose images attend to themselves both ways (their forward takes `token_type_ids`)."""
IMAGE_BLOCK_ATTENTION = frozenset({"eager", "sdpa", FLEX_ATTENTION})
"""The text-model kernels that take transformers' image-block mask (tested in tests/model/test_gemma3_packed.py)."""
SINK_MODELS = frozenset({"gpt_oss"})
"""`config.model_type`s whose attention has learned sinks (a per-head logit every softmax row also normalizes over)."""
SINK_ATTENTION = frozenset({"eager", FLEX_ATTENTION})
"""The kernels of ours and transformers' that add the sinks (`s_aux`): sdpa has no such input (transformers refuses it
for these models) and our varlen kernel would silently leave them out."""


class UnsupportedAttention(ContractError, RunError):
    """An attention setting the model's attention rule cannot be expressed in (e.g. varlen for Gemma 3's images)."""
MROPE_ROWS = 4  # text row + temporal, height, width


@functools.cache
def register_flex_attention() -> None:
    """Make `FLEX_ATTENTION` a transformers attention implementation (once per process)."""
    from transformers import AttentionInterface
    from transformers.integrations.flex_attention import flex_attention_forward
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(FLEX_ATTENTION, flex_attention_forward)
    AttentionMaskInterface.register(FLEX_ATTENTION, flex_document_mask)


@functools.cache
def register_varlen_attention() -> None:
    """Make `VARLEN_ATTENTION` a transformers attention implementation (once per process); no mask function, so
    `create_causal_mask` builds none."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)


def set_attention(model: torch.nn.Module, setting: str) -> None:
    """Give a loaded model the attention of a `[model].attn_implementation` setting, every sub-model included.

    `set_attn_implementation` for all but varlen; varlen is written into each sub-model's config (what that
    method does after its checks), since the checks would try to import `VARLEN_ATTENTION` as a flash kernel.
    """
    implementation = attention_implementation(setting, model.config)
    text = implementation.get("text_config", setting) if isinstance(implementation, dict) else implementation
    check_image_block_attention(model.config, text, setting)
    check_sink_attention(model.config, text, setting)
    if implementation != VARLEN_ATTENTION:
        model.set_attn_implementation(implementation)
        return
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
            module.config._attn_implementation = implementation  # the setter covers the sub-configs


def flex_document_mask(
    batch_size: int, q_length: int, kv_length: int, *, mask_function: Callable[..., Any], **kwargs: Any
) -> BlockMask:
    """transformers' flex `BlockMask`, with a one-sample row given the document mask a packed row gets.

    `create_causal_mask` finds no packed samples in a row of one sample and passes the bare causal function
    instead of `causal AND same document`. Dynamo guards on the mask function's code objects, so that row would
    compile `create_block_mask` and `flex_attention` again at a length already compiled; an all-zero document
    row (every token in sample 0) is the same mask through the same code. The document ids themselves are
    guarded by shape and dtype only, so other packed rows of a compiled length reuse it.
    """
    from transformers.masking_utils import (
        and_masks,
        causal_mask_function,
        flex_attention_mask,
        packed_sequence_mask_function,
    )

    if mask_function is causal_mask_function:
        tokens = kv_length + kwargs.get("kv_offset", 0)
        one_sample = torch.zeros(batch_size, tokens, dtype=torch.long, device=kwargs.get("device", "cpu"))
        mask_function = and_masks(causal_mask_function, packed_sequence_mask_function(one_sample))
    return flex_attention_mask(batch_size, q_length, kv_length, mask_function=mask_function, **kwargs)


def attention_implementation(setting: str, config: object) -> str | dict[str, str]:
    """The `attn_implementation` argument (`from_pretrained`, `set_attn_implementation`) for a model setting.

    Every setting but flex and varlen passes through unchanged (one kernel for the text model and any vision
    tower); varlen becomes `VARLEN_ATTENTION` for both; flex goes to the text model of a VLM and sdpa to its
    vision tower.
    """
    if setting == VARLEN_SETTING:
        register_varlen_attention()
        return VARLEN_ATTENTION
    if setting != FLEX_SETTING:
        return setting
    register_flex_attention()
    if getattr(config, "vision_config", None) is None:
        return FLEX_ATTENTION
    return {"text_config": FLEX_ATTENTION, "vision_config": "sdpa"}


def has_image_blocks(config: object) -> bool:
    """Whether a (top-level) model config's images attend to themselves both ways (`IMAGE_BLOCK_MODELS`)."""
    return getattr(config, "model_type", None) in IMAGE_BLOCK_MODELS


def check_image_block_attention(config: object, implementation: object, setting: object | None = None) -> None:
    """Refuse a text-model kernel that cannot express a model's bidirectional image blocks (`setting`: the
    `[model].attn_implementation` value it came from, named in the error)."""
    if has_image_blocks(config) and implementation not in IMAGE_BLOCK_ATTENTION:
        name = getattr(config, "model_type", None)
        expected = (
            f"sdpa, eager or flex_attention for {name}: its images attend to themselves both ways, which "
            f"{implementation} cannot express"
        )
        value = implementation if setting is None else setting
        raise UnsupportedAttention("model.attn_implementation", value, expected)


def has_attention_sinks(config: object) -> bool:
    """Whether a model config's attention has learned sinks (`SINK_MODELS`)."""
    return getattr(config, "model_type", None) in SINK_MODELS


def check_sink_attention(config: object, implementation: object, setting: object | None = None) -> None:
    """Refuse a kernel that would leave out a model's attention sinks (gpt-oss) instead of computing them."""
    if has_attention_sinks(config) and implementation not in SINK_ATTENTION:
        name = getattr(config, "model_type", None)
        expected = f"eager or flex_attention for {name}: its attention sinks are not computed by {implementation}"
        value = implementation if setting is None else setting
        raise UnsupportedAttention("model.attn_implementation", value, expected)


def check_packed_attention(config: object, device: torch.device | None = None, backward: bool = False) -> None:
    """Refuse an attention implementation not known to honour packed boundaries (native flex, paged, custom),
    and one that cannot run the backward pass on `device` when a backward will follow."""
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in PACKED_ATTENTION:
        raise ContractError("attn_implementation", implementation, f"one of {sorted(PACKED_ATTENTION)}")
    if backward and device is not None and device.type == "cpu" and implementation in NO_CPU_BACKWARD:
        expected = "sdpa or eager to train on CPU (torch's flex attention has no backward pass on CPU)"
        raise ContractError("attn_implementation", FLEX_SETTING, expected)


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
