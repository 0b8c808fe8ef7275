"""The `[sft]`, `[rl]` and `[eval]` sections: what each kind of run does and for how long."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from foveal.configs.orchestrator import DEMO_ENVIRONMENT

DEMO_DATASET = "tiny:demo"


class SFTSection(BaseModel):
    """Supervised fine-tuning: the dataset and the length of the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        default=DEMO_DATASET, min_length=1, description="JSONL path, HF datasets name, or `tiny:demo` (generated)."
    )
    batch_size: int = Field(default=8, ge=1, description="Samples per optimizer step (packed into micro-batches).")
    max_steps: int = Field(default=20, ge=1, description="Optimizer steps; the run stops at this or after `epochs`.")
    epochs: int = Field(default=1, ge=1, description="Passes over the dataset.")
    eval_every: int = Field(default=0, ge=0, description="Evaluate every N steps; 0 never.")
    shuffle_seed: int = Field(default=0, description="Seed of the dataset shuffle.")


class RLSection(BaseModel):
    """Reinforcement learning: the length of the run and an optional SFT warm start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(default=20, ge=1, description="RL optimizer steps.")
    eval_every: int = Field(default=0, ge=0, description="Evaluate every N steps; 0 never.")
    warmup_sft_steps: int = Field(default=0, ge=0, description="SFT steps on the environments' data before RL.")


class EvalSection(BaseModel):
    """Evaluation: which environment, how many examples, and which server answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str = Field(default=DEMO_ENVIRONMENT, min_length=1, description="Registered environment name.")
    num_examples: int = Field(default=16, ge=1, description="Examples evaluated.")
    rollouts_per_example: int = Field(default=1, ge=1, description="Completions sampled per example.")
    endpoint: str | None = Field(
        default=None, description="Base URL of a running server; None starts an embedded one from [inference]."
    )
    output_dir: Path | None = Field(default=None, description="Results folder; None means `<run dir>/eval`.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens sampled per completion.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature (0 = greedy).")
