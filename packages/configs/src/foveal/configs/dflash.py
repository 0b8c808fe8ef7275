"""`foveal dflash`: train a DFlash block-drafting model for a (vision-)language target.

The `[model]` section names the frozen target; `[draft]` shapes the draft; `[dflash]` says what it learns
from (the data, block size, captured target layers, loss weighting) and how it is evaluated. The trainer,
multimodal, renderer and logging sections are the ones `foveal sft` uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from foveal.configs import checks
from foveal.configs.errors import Problem
from foveal.configs.runs import RunConfig
from foveal.configs.trainer import TrainerConfig

MIXED_DEMO = "tiny:mixed"


class DraftConfig(BaseModel):
    """The draft's transformer: a few layers as wide as the target (it shares the target's embedding and LM head).

    Unset sizes follow the target's text config.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_layers: int = Field(default=3, ge=1, description="Draft transformer layers (DFlash drafts use 1-5).")
    num_attention_heads: int | None = Field(default=None, ge=1, description="Query heads; None: the target's.")
    num_key_value_heads: int | None = Field(default=None, ge=1, description="Key/value heads; None: the target's.")
    head_dim: int | None = Field(default=None, ge=2, description="Per-head width; None: the target's.")
    intermediate_size: int | None = Field(default=None, ge=1, description="MLP width; None: the target's.")
    rope_theta: float | None = Field(default=None, gt=0, description="Rotary base; None: the target's.")
    rms_norm_eps: float = Field(default=1e-6, gt=0, description="RMSNorm epsilon.")


class DFlashSection(BaseModel):
    """What the draft learns from, how blocks and the loss are built, and how acceptance is measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        default=MIXED_DEMO,
        min_length=1,
        description="`tiny:mixed` (generated shapes + arithmetic chats), `shapes[:N]`, a JSONL file or a HF dataset.",
    )
    eval_dataset: str | None = Field(
        default=None,
        description="Held-out chats for acceptance; None: the demo's eval split, else the last eval_examples rows.",
    )
    responses: Literal["target", "dataset"] = Field(
        default="target",
        description="target: the last assistant turn is regenerated greedily by the target (self-distillation); "
        "dataset: train on the dataset's assistant tokens as written.",
    )
    train_examples: int = Field(default=256, ge=1, description="Conversations used for training (the first N).")
    max_new_tokens: int = Field(default=64, ge=1, description="Longest regenerated or evaluated response, in tokens.")
    generate_batch_size: int = Field(
        default=8,
        ge=1,
        description="Prompts per batched greedy generate (responses and held-out continuations); "
        "the batches are shared out over ranks.",
    )
    block_size: int = Field(default=16, ge=2, description="Tokens per draft block: the anchor plus block_size - 1.")
    target_layer_ids: list[int] | None = Field(
        default=None, description="Target decoder layers whose outputs feed the draft; None: spread as DFlash does."
    )
    embed_weight: str = Field(
        default="model.language_model.embed_tokens.weight", min_length=1, description="Target embedding weight path."
    )
    lm_head_weight: str = Field(default="lm_head.weight", min_length=1, description="Target LM head weight path.")
    loss_decay_gamma: float = Field(
        default=7.0, ge=0, description="Block position k>=1 weighs exp(-(k-1)/gamma); 0 weighs all equally."
    )
    anchors_per_sample: int = Field(default=512, ge=1, description="Most anchors drawn per sample per step.")
    anchor_chunk: int = Field(default=256, ge=1, description="Anchors per draft forward (bounds the mask size).")
    batch_size: int = Field(default=8, ge=1, description="Samples per optimizer step (packed into micro-batches).")
    max_steps: int = Field(default=100, ge=1, description="Optimizer steps; the run stops at this or after epochs.")
    epochs: int = Field(default=4, ge=1, description="Passes over the training conversations.")
    shuffle_seed: int = Field(default=0, description="Seed of the per-epoch shuffle.")
    eval_every: int = Field(
        default=0, ge=0, description="Measure acceptance every N steps and after the last; 0: after the last only."
    )
    eval_examples: int = Field(default=16, ge=1, description="Held-out prompts whose greedy decoding is simulated.")


class DFlashConfig(RunConfig):
    """A DFlash draft-training run against a frozen target (`[model]`)."""

    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="Training loop of the draft.")
    draft: DraftConfig = Field(default_factory=DraftConfig, description="Draft model shape.")
    dflash: DFlashSection = Field(default_factory=DFlashSection, description="Data, blocks, loss and evaluation.")

    def combination_problems(self) -> list[Problem]:
        return [
            *super().combination_problems(),
            *checks.micro_batch_holds_a_sequence(self.trainer),
            *checks.warmup_within_run(self.trainer, self.dflash.max_steps, "dflash.max_steps"),
            *_layer_ids_problems(self.dflash.target_layer_ids),
        ]


def _layer_ids_problems(layer_ids: list[int] | None) -> list[Problem]:
    """Layer ids must be distinct, non-negative and non-empty (the target's depth is checked at load time)."""
    if layer_ids is None:
        return []
    if not layer_ids or min(layer_ids) < 0 or len(set(layer_ids)) != len(layer_ids):
        expected = "distinct non-negative layer indices, at least one"
        return [Problem("dflash.target_layer_ids", expected, got=str(layer_ids))]
    return []
