"""The `[renderer]` section: how conversations become token ids and a loss mask."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from foveal.configs.model import Family


class RendererConfig(BaseModel):
    """Chat rendering: the family's template, which tokens carry loss, and multi-turn bridging."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family | None = Field(default=None, description="Renderer family override; None follows the model.")
    loss_on: Literal["assistant", "all", "last_assistant"] = Field(
        default="assistant", description="Which tokens are trained on."
    )
    exact_prefix: bool = Field(
        default=True, description="Multi-turn bridging keeps the sampled tokens instead of re-rendering them."
    )
    max_images_per_sample: int = Field(default=8, ge=0, description="Most images one sample may carry.")
