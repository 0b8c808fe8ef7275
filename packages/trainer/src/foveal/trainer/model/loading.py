"""Load the policy model and its processor from `[model].name_or_path`, and decide the compute precision.

`name_or_path` is a hub name, a local folder (a Foveal checkpoint folder is one), or `tiny:<family>`,
which builds the tiny random-weight model of that family locally (`foveal.trainer.tiny_models`) so demos
and tests never need a network. Models with a `vision_config` load through `AutoModelForImageTextToText`,
others through `AutoModelForCausalLM`, the way users load them; the processor is the folder's
`AutoProcessor` (a tokenizer for text-only models), so checkpoints can save it beside the weights.

Precision (`trainer.precision`): `auto` is bf16 autocast on CUDA and plain fp32 on CPU, where bf16 matmuls
are slow and the demo wants exact, reproducible numbers. Parameters stay in the dtype they were loaded
in (`[model].dtype`; fp32 master weights unless a bf16 checkpoint is loaded as is), and autocast runs the
matmuls in bf16; the loss is always computed in fp32 (`foveal.trainer.training.loss`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from foveal.configs.errors import RunError
from foveal.configs.model import ModelConfig
from foveal.trainer.model.attention import (
    FLEX_SETTING,
    VARLEN_SETTING,
    has_attention_sinks,
    has_image_blocks,
    set_attention,
)
from foveal.trainer.model.checkpointing import set_activation_checkpointing
from foveal.trainer.model.flex_padding import set_flex_bucket
from foveal.trainer.model.fused_kernels import apply_kernels
from foveal.trainer.model.quiet import quiet_progress
from foveal.trainer.tiny_models import build_tiny_model

TINY_PREFIX = "tiny:"
AUTO = "auto"
PrecisionSetting = Literal["auto", "fp32", "bf16"]
_DTYPES: dict[str, torch.dtype | str] = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}


class ModelLoadError(RunError, ValueError):
    """A model setting that cannot be honoured; names the field and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


@dataclass(frozen=True)
class Precision:
    """The dtype matmuls run in on one device; `autocast()` wraps each forward in it."""

    device: torch.device
    dtype: torch.dtype

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast, or nothing at all for fp32 (so fp32 runs are bit-for-bit plain PyTorch)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def resolve_precision(setting: PrecisionSetting, device: torch.device) -> Precision:
    """`trainer.precision` on `device`: auto is bf16 on CUDA, fp32 elsewhere."""
    if setting == "fp32" or (setting == "auto" and device.type != "cuda"):
        return Precision(device, torch.float32)
    return Precision(device, torch.bfloat16)


def resolve_source(name_or_path: str, cache_root: Path | None = None) -> str:
    """A folder or hub name `from_pretrained` accepts: `tiny:<family>` is built (once) under `cache_root`.

    A local folder must hold a model, and a name that can only be a path (absolute, starting with `.` or `~`, or
    with more than one `/`: hub names have one at most) must exist: either is refused here, naming the setting,
    rather than by the hub client's traceback about repo ids."""
    if name_or_path.startswith(TINY_PREFIX):
        return str(build_tiny_model(name_or_path.removeprefix(TINY_PREFIX), cache_root))
    if Path(name_or_path).is_dir():
        missing = missing_model_file(Path(name_or_path))
        if missing:
            expected = f"a model folder with config.json and weights; this one has no {missing}"
            raise ModelLoadError("model.name_or_path", name_or_path, expected)
    elif _can_only_be_a_path(name_or_path):
        raise ModelLoadError("model.name_or_path", name_or_path, "an existing model folder or a Hugging Face name")
    return name_or_path


def _can_only_be_a_path(name: str) -> bool:
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1


def missing_model_file(folder: Path) -> str | None:
    """What a `from_pretrained` folder lacks of its config and weights, or None when it has both."""
    if not (folder / "config.json").is_file():
        return "config.json"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return "weights (*.safetensors or *.bin)"
    return None


def is_vision_model(source: str, trust_remote_code: bool = False) -> bool:
    """Whether the model at `source` has a vision tower (its config carries a `vision_config`)."""
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    return getattr(config, "vision_config", None) is not None


def load_model(config: ModelConfig, source: str, device: torch.device, training: bool = True) -> torch.nn.Module:
    """The model at `source` on `device`, in training mode, with the configured dtype and attention kernel
    (`training_attention`; `foveal.trainer.model.attention.set_attention`: flex for a VLM's text model only;
    varlen, which `from_pretrained` cannot take, set after loading) and the flex length bucket `packed_logits`
    pads rows to. For training also the activation checkpointing and the fused kernels of `[model]`; a model
    loaded to generate (`training=False`) keeps sdpa for the kernels that need packed rows without a cache."""
    hf_config = AutoConfig.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    vision = getattr(hf_config, "vision_config", None) is not None
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    with quiet_progress():
        model = auto.from_pretrained(source, dtype=_DTYPES[config.dtype], trust_remote_code=config.trust_remote_code)
    attention = training_attention(config.attn_implementation, device, hf_config)
    set_attention(model, attention if training else generation_attention(attention, hf_config))
    set_flex_bucket(model, config.flex_bucket_tokens)
    if training:
        set_activation_checkpointing(model, config.activation_checkpointing)
        apply_kernels(model, config.kernels, device)
    return model.to(device).train()


def training_attention(setting: str, device: torch.device, hf_config: object = None) -> str:
    """`[model].attn_implementation` on `device`: auto is varlen on CUDA (one kernel call per layer over the
    packed samples and the vision windows) and sdpa elsewhere (varlen there runs sdpa once per sample), and sdpa
    for a model whose images attend both ways (Gemma 3), which varlen cannot express."""
    if setting != AUTO:
        return setting
    if has_attention_sinks(hf_config):  # gpt-oss: eager is the kernel that computes its sinks on every device
        return "eager"
    return VARLEN_SETTING if device.type == "cuda" and not has_image_blocks(hf_config) else "sdpa"


def generation_attention(setting: str, hf_config: object = None) -> str:
    """The kernel a model that generates runs: varlen and flex serve packed training rows, not a KV cache (eager
    instead of sdpa for a model with attention sinks)."""
    if setting in (VARLEN_SETTING, FLEX_SETTING):
        return "eager" if has_attention_sinks(hf_config) else "sdpa"
    return setting


def load_processor(config: ModelConfig, source: str) -> Any:
    """The folder's processor (tokenizer + image processor) for VLMs, its tokenizer for text-only models."""
    auto = AutoProcessor if is_vision_model(source, config.trust_remote_code) else AutoTokenizer
    return auto.from_pretrained(source, trust_remote_code=config.trust_remote_code)
