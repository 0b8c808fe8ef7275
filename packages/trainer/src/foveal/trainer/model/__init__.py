"""Model-side helpers for packed rows: attention kept inside samples, and the forward."""

from foveal.trainer.model.attention import (
    PACKED_ATTENTION,
    attention_implementation,
    check_boundaries,
    check_packed_attention,
)
from foveal.trainer.model.flex_padding import bucket_length, set_flex_bucket
from foveal.trainer.model.forward import packed_hidden, packed_inputs, packed_logits

__all__ = [
    "PACKED_ATTENTION",
    "attention_implementation",
    "bucket_length",
    "check_boundaries",
    "check_packed_attention",
    "packed_hidden",
    "packed_inputs",
    "packed_logits",
    "set_flex_bucket",
]
