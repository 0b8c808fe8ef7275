"""The target's pieces a DFlash draft shares: token embedding, LM head, and the text sizes around them.

Weights are found by their parameter path (`dflash.embed_weight`, `dflash.lm_head_weight`), because VLMs
nest the language model (`model.language_model.embed_tokens.weight` in transformers 5 Qwen-VL classes)
where text models do not (`model.embed_tokens.weight`). Sizes are read from the config, falling back to
its `text_config` (a Qwen-VL config keeps vocab_size, hidden_size and pad_token_id only there). Both are
frozen: the draft trains its own layers only, and a draft is only useful with the target it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class TargetWeightError(ValueError):
    """A weight path or text setting the target does not have; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class TargetWeights:
    """The frozen embedding and LM head (`[vocab, hidden]` each; the same tensor when tied) and the text sizes."""

    embed: torch.Tensor
    lm_head: torch.Tensor
    vocab_size: int
    hidden_size: int
    pad_token_id: int | None
    num_layers: int

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.embed)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of hidden states through the target's head."""
        return torch.nn.functional.linear(hidden.to(self.lm_head.dtype), self.lm_head).float()


def text_setting(config: Any, name: str) -> Any:
    """`config.<name>`, or the text config's when the top level lacks it (None when neither has it)."""
    value = getattr(config, name, None)
    if value is None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else getattr(config, "text_config", None)
        value = getattr(text, name, None)
    return value


def required_setting(config: Any, name: str) -> Any:
    value = text_setting(config, name)
    if value is None:
        raise TargetWeightError(f"model config {name}", None, "set on the config or its text_config")
    return value


def resolve_weight(model: torch.nn.Module, path: str, field: str) -> torch.Tensor:
    """The parameter at `path`; a missing one is an error naming the field, the path and likely candidates."""
    try:
        return model.get_parameter(path)
    except AttributeError:
        leaf = path.rsplit(".", 2)[-2] if path.count(".") else path
        near = sorted(name for name, _ in model.named_parameters(remove_duplicate=False) if leaf in name)[:5]
        raise TargetWeightError(field, path, f"a parameter of {type(model).__name__} (similar: {near})") from None


def resolve_target_weights(model: torch.nn.Module, embed_path: str, lm_head_path: str) -> TargetWeights:
    """Embedding and LM head by path, checked against the text config's vocab and hidden sizes."""
    config = model.config
    vocab, hidden = int(required_setting(config, "vocab_size")), int(required_setting(config, "hidden_size"))
    weights = {
        "dflash.embed_weight": resolve_weight(model, embed_path, "dflash.embed_weight"),
        "dflash.lm_head_weight": resolve_weight(model, lm_head_path, "dflash.lm_head_weight"),
    }
    for field, weight in weights.items():
        if tuple(weight.shape) != (vocab, hidden):
            raise TargetWeightError(field, list(weight.shape), f"shape [vocab_size={vocab}, hidden_size={hidden}]")
    pad = text_setting(config, "pad_token_id")
    return TargetWeights(
        embed=weights["dflash.embed_weight"].detach(),
        lm_head=weights["dflash.lm_head_weight"].detach(),
        vocab_size=vocab,
        hidden_size=hidden,
        pad_token_id=None if pad is None else int(pad),
        num_layers=int(required_setting(config, "num_hidden_layers")),
    )


def rope_theta(config: Any) -> float:
    """The target's rotary base (`rope_parameters.rope_theta` in transformers 5, `rope_theta` before)."""
    parameters = text_setting(config, "rope_parameters") or {}
    theta = parameters.get("rope_theta") if isinstance(parameters, dict) else None
    return float(theta if theta is not None else required_setting(config, "rope_theta"))
