"""The `[orchestrator]` section: how rollouts are sampled, scored and turned into advantages."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

DEMO_ENVIRONMENT = "shapes"
AdvantageKind = Literal["group_mean", "group_mean_std", "batch_mean_std", "none"]


class EnvironmentConfig(BaseModel):
    """One environment in the RL mixture: its registered name, sampling weight and constructor arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default=DEMO_ENVIRONMENT, min_length=1, description="Registered environment name.")
    weight: float = Field(default=1.0, gt=0, description="Relative share of prompts drawn from this environment.")
    args: dict[str, JsonValue] = Field(default_factory=dict, description="Keyword arguments for the environment.")


class OrchestratorConfig(BaseModel):
    """The rollout loop: prompts per step, group size, off-policy lag and advantage normalization."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=4, ge=1, description="Prompts per training step.")
    rollouts_per_prompt: int = Field(default=4, ge=1, description="Completions sampled per prompt (the group).")
    max_async_level: int = Field(
        default=1, ge=0, description="How many steps rollouts may lag the trainer's weights (0 = on-policy)."
    )
    advantage: AdvantageKind = Field(
        default="group_mean_std",
        description="Advantage normalization: within each prompt's group, or over the whole step (batch_mean_std).",
    )
    environments: list[EnvironmentConfig] = Field(
        default_factory=lambda: [EnvironmentConfig()], min_length=1, description="Environment mixture."
    )
    max_tokens: int = Field(default=256, ge=1, description="Most tokens sampled per completion.")
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature for rollouts.")
    seed: int = Field(default=0, description="Seed for prompt order and sampling.")
    max_concurrent: int = Field(default=32, ge=1, description="Rollouts in flight at once.")
    endpoints: tuple[str, ...] = Field(
        default=(),
        description="URLs of running inference servers or a router (`foveal rl --connect`); "
        "empty: `foveal rl` starts inference.num_servers servers and fills this in for its children.",
    )
    wait_timeout_s: float = Field(
        default=1800.0, gt=0, description="Longest wait for the servers to come up, or for the trainer's next step."
    )
