"""`ServeConfig`: what `foveal serve` reads: the shared run sections plus `[inference]` (an RL run's own sections
are accepted, so the run's file starts its servers too)."""

from __future__ import annotations

from pydantic import Field

from foveal.configs import InferenceConfig, Problem, RunConfig, checks
from foveal.configs.runs import RLRunSections


class ServeConfig(RunConfig, RLRunSections):
    """One inference server: the model, its renderer, the image store and limits, and `[inference]`."""

    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="The server.")

    def combination_problems(self) -> list[Problem]:
        return [*super().combination_problems(), *checks.remote_server_needs_token(self.inference)]
