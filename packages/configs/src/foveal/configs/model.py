"""The `[model]` section: which weights to load and how."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal[
    "qwen2_vl", "qwen3_vl", "qwen3_vl_thinking", "qwen3", "llama3", "gpt_oss", "gemma3", "glm4v", "internvl", "smolvlm",
    "generic",
]
ModelFamily = Literal["auto", Family]
TINY_MODEL = "tiny:qwen2_5_vl"


class ModelConfig(BaseModel):
    """The policy model: a hub name, a local folder, or a `tiny:` model built locally for demos and tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name_or_path: str = Field(
        default=TINY_MODEL, min_length=1, description="Hub name, local folder, or `tiny:<family>` (built locally)."
    )
    family: ModelFamily = Field(default="auto", description="Layout/renderer family; auto detects it from the model.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="Weights dtype when loading; auto uses the checkpoint's."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flex_attention", "varlen"] = Field(
        default="auto",
        description=(
            "Attention kernel for training; auto is varlen on CUDA and sdpa elsewhere. varlen runs one varlen kernel "
            "per layer over the packed samples and the vision windows (CUDA bf16/fp16; sdpa per sample elsewhere); "
            "flex_attention (CUDA only) skips the blocks between packed samples. Inference servers generate "
            "with sdpa under auto, varlen and flex_attention (they need a KV cache)."
        ),
    )
    activation_checkpointing: int = Field(
        default=0,
        ge=0,
        description=(
            "Recompute activations in the backward pass for every k-th decoder layer and vision block "
            "(1: all of them; 0: off): memory for compute."
        ),
    )
    kernels: Literal["auto", "torch", "liger"] = Field(
        default="auto",
        description=(
            "RMSNorm and SwiGLU kernels for training: liger (fused Triton kernels, CUDA, the foveal-trainer[gpu] "
            "extra), torch (the model's own), or auto: liger on CUDA when it is installed, else torch."
        ),
    )
    flex_bucket_tokens: int = Field(
        default=2048,
        ge=0,
        description="Under flex_attention, pad each packed row to a multiple of this (one compile per length); 0: off.",
    )
    trust_remote_code: bool = Field(default=False, description="Allow running model code shipped with the checkpoint.")
