"""The `[sft]`, `[rl]` and `[eval]` sections: what each kind of run does and for how long."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr

from foveal.configs.orchestrator import DEMO_ENVIRONMENT

DEMO_DATASET = "tiny:demo"
ImagesSeen = Literal["real", "blank"]
"""What the model is shown for each image: the image, or a uniform grey one of the same size (a blind control:
the same tokens and layout, no visual information)."""


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
    warmup_sft_batch_size: int = Field(default=16, ge=1, description="Conversations per SFT warmup step.")
    warmup_sft_lr: float = Field(default=2e-3, gt=0, description="Peak learning rate of the SFT warmup.")
    warmup_images: ImagesSeen = Field(
        default="real", description="blank: the warm-up sees grey images of the same size, so it teaches the answer "
        "format and priors, never the visual skill (RL must learn that)."
    )
    images: ImagesSeen = Field(
        default="real", description="blank: every image of the rollouts and evals is a grey one of the same size "
        "(a blind run: what the model reaches without seeing)."
    )
    blind_control: bool = Field(
        default=False, description="`foveal rl` runs the same job again with images = blank in `<run dir>/blind` "
        "and compares both (plot and summary)."
    )
    eval_examples: int = Field(
        default=32, ge=0, description="Eval-split examples per environment scored greedily before, during "
        "(every eval_every steps) and after RL; 0 never evaluates."
    )


class EvalSection(BaseModel):
    """Evaluation: which environment, how many examples, and which server answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str = Field(default=DEMO_ENVIRONMENT, min_length=1, description="Registered environment name.")
    environment_args: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments for the environment's loader."
    )
    split: Literal["train", "eval"] = Field(default="eval", description="Dataset split the examples come from.")
    images: ImagesSeen = Field(
        default="real", description="blank: every image is replaced by a grey one of the same size (a blind baseline)."
    )
    num_examples: int = Field(default=16, ge=1, description="Examples evaluated.")
    rollouts_per_example: int = Field(default=1, ge=1, description="Completions sampled per example.")
    endpoint: str | None = Field(
        default=None, description="Base URL of a running server; None starts an embedded one from [inference]."
    )
    api: Literal["foveal", "openai"] = Field(
        default="foveal", description="foveal: token-in/token-out /v1/generate; openai: /v1/chat/completions."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token for `endpoint`; None uses [inference].api_token. Never printed."
    )
    served_model: str | None = Field(
        default=None, description="Model name sent to an OpenAI endpoint; None uses [model].name_or_path."
    )
    output_dir: Path | None = Field(default=None, description="Results folder; None means `<run dir>/eval`.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens sampled per completion.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature (0 = greedy).")
    seed: int = Field(default=0, ge=0, description="Sampling seed; each rollout's seed is derived from it.")
    max_concurrent: int = Field(default=8, ge=1, description="Rollouts in flight at once.")
    pass_threshold: float = Field(default=1.0, description="A rollout passes (for pass@k) when its reward is >= this.")
    server_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait for the embedded server to answer /health."
    )
