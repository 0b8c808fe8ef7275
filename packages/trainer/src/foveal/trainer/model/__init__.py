"""Model-side helpers for packed rows: attention kept inside samples, forward and target log-probs."""

from foveal.trainer.model.attention import PACKED_ATTENTION, check_boundaries, check_packed_attention
from foveal.trainer.model.forward import packed_logits, target_logprobs

__all__ = ["PACKED_ATTENTION", "check_boundaries", "check_packed_attention", "packed_logits", "target_logprobs"]
