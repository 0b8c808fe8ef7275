"""`ServeConfig`: what `foveal serve` reads: the shared run sections plus `[inference]`."""

from __future__ import annotations

from pydantic import Field

from foveal.configs import InferenceConfig, Problem, RunConfig, checks


class ServeConfig(RunConfig):
    """One inference server: the model, its renderer, the image store and limits, and `[inference]`."""

    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="The server.")

    def combination_problems(self) -> list[Problem]:
        return [*super().combination_problems(), *checks.remote_server_needs_token(self.inference)]
