"""Model-side helpers for packed rows: attention kept inside samples, and the forward."""

from foveal.trainer.model.attention import PACKED_ATTENTION, check_boundaries, check_packed_attention
from foveal.trainer.model.forward import packed_logits

__all__ = ["PACKED_ATTENTION", "check_boundaries", "check_packed_attention", "packed_logits"]
