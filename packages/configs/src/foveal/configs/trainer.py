"""The `[trainer]` section: optimizer, schedule, loss, precision, checkpoints and device."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LossKind = Literal["sft", "ppo", "gspo", "importance_sampling"]
RL_LOSS_KINDS: tuple[LossKind, ...] = ("ppo", "gspo", "importance_sampling")


class OptimConfig(BaseModel):
    """The optimizer (AdamW only, for now)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["adamw"] = Field(default="adamw", description="Optimizer.")
    lr: float = Field(default=1e-5, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam beta1 and beta2.")
    weight_decay: float = Field(default=0.0, ge=0, description="Decoupled weight decay.")
    eps: float = Field(default=1e-8, gt=0, description="Adam epsilon.")
    vision_lr_scale: float = Field(
        default=1.0, gt=0, description="The vision tower and projector train at lr times this (VLMs only)."
    )


class ScheduleConfig(BaseModel):
    """Learning-rate schedule: linear warmup, then decay towards `min_lr_ratio * lr`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cosine", "constant", "linear"] = Field(default="cosine", description="Shape after warmup.")
    warmup_steps: int = Field(default=0, ge=0, description="Steps of linear warmup from 0 to lr.")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final lr as a fraction of the peak lr.")


class LossConfig(BaseModel):
    """The training objective and its clipping / KL terms (the RL terms are ignored by `sft`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LossKind = Field(default="sft", description="Objective: sft, ppo, gspo or importance_sampling.")
    clip_low: float = Field(default=0.2, ge=0, description="Lower clip: ratio floor is 1 - clip_low.")
    clip_high: float = Field(default=0.28, ge=0, description="Upper clip: ratio ceiling is 1 + clip_high.")
    kl_coef: float = Field(default=0.0, ge=0, description="Weight of the KL penalty to the reference policy.")
    entropy_coef: float = Field(
        default=0.0,
        ge=0,
        description="RL: weight of an entropy bonus on counted tokens, so answers RL rarely samples stay reachable.",
    )
    importance_cap: float = Field(
        default=2.0, ge=1, description="importance_sampling: importance weights above this are truncated to it."
    )


class RLLossConfig(LossConfig):
    """The loss of an RL run: the same fields, defaulting to an RL objective."""

    kind: LossKind = Field(default="importance_sampling", description="Objective: ppo, gspo, importance_sampling.")


class CheckpointConfig(BaseModel):
    """When checkpoints are written, how many are kept, and whether a run resumes from the latest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = Field(default=None, description="Checkpoint folder; None means `<run dir>/checkpoints`.")
    every_steps: int = Field(default=100, ge=1, description="Write a checkpoint every N optimizer steps.")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept; older ones are deleted.")
    resume: bool = Field(default=False, description="Resume from the latest checkpoint in the folder.")


class RLCheckpointConfig(CheckpointConfig):
    """Checkpoints of an RL run: one per step, since each step's checkpoint is the policy the servers load next."""

    every_steps: int = Field(default=1, ge=1, description="Write a checkpoint every N optimizer steps (1 in RL).")


class TrainerConfig(BaseModel):
    """Everything the training loop needs besides the model and the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Objective.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpointing.")
    seq_len: int = Field(default=2048, ge=1, description="Longest packed sequence, in tokens.")
    micro_batch_tokens: int = Field(default=4096, ge=1, description="Tokens per forward/backward micro-batch.")
    overlong_text: Literal["error", "truncate"] = Field(
        default="error",
        description="A text-only sample longer than seq_len: refuse it, or keep its first seq_len tokens. "
        "A multimodal one is always refused (tokens and images are never cut out of sync).",
    )
    loss_chunk_tokens: int = Field(
        default=1024,
        ge=0,
        description="Tokens per chunk of the LM head + cross entropy, so the row's [tokens, vocab] logits never "
        "exist at once; 0 computes the full logits (the plain path).",
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient-norm clipping threshold.")
    freeze_vision: bool = Field(
        default=False,
        description="Keep the vision tower and projector fixed (SFT and RL): only the language model trains.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="Compute precision; auto picks bf16 on CUDA, fp32 on CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Training device; auto prefers CUDA.")
    seed: int = Field(default=0, description="Seed for initialization and data order.")


class RLTrainerConfig(TrainerConfig):
    """The trainer of an RL run: an RL objective, a checkpoint per step, and a wait limit for rollouts."""

    loss: RLLossConfig = Field(default_factory=RLLossConfig, description="Objective.")
    checkpoint: RLCheckpointConfig = Field(default_factory=RLCheckpointConfig, description="Checkpointing.")
    rollout_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest the trainer waits for a step's rollout batch before failing."
    )
