"""The composed run configurations: one per kind of job, each rejecting impossible combinations.

The `[multimodal]` section is declared once, on the shared base, and components receive it from the run
config rather than holding their own copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from foveal.configs import checks
from foveal.configs.errors import IncompatibleSettings, Problem
from foveal.configs.inference import InferenceConfig
from foveal.configs.jobs import EvalSection, RLSection, SFTSection
from foveal.configs.logging import LoggingConfig
from foveal.configs.model import ModelConfig
from foveal.configs.multimodal import MultimodalConfig
from foveal.configs.orchestrator import OrchestratorConfig
from foveal.configs.renderer import RendererConfig
from foveal.configs.trainer import RLTrainerConfig, TrainerConfig


class RunConfig(BaseModel):
    """The sections every run has; subclasses add theirs and extend `combination_problems`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy model.")
    multimodal: MultimodalConfig = Field(default_factory=MultimodalConfig, description="Image store and limits.")
    renderer: RendererConfig = Field(default_factory=RendererConfig, description="Chat rendering.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Run folder and metric sinks.")

    def combination_problems(self) -> list[Problem]:
        """Problems between sections; each subclass adds the checks its sections need."""
        return checks.families_agree(self.model, self.renderer)

    @model_validator(mode="after")
    def _reject_impossible_combinations(self) -> Self:
        problems = self.combination_problems()
        if problems:
            raise IncompatibleSettings(problems)
        return self

    def store_dir(self) -> Path:
        """The image store of this run (`[multimodal].offload_dir` or `<run dir>/assets`)."""
        return self.multimodal.store_dir(self.logging.run_dir)


class SFTConfig(RunConfig):
    """A supervised fine-tuning run."""

    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="Training loop.")
    sft: SFTSection = Field(default_factory=SFTSection, description="Dataset and run length.")

    def combination_problems(self) -> list[Problem]:
        return [
            *super().combination_problems(),
            *checks.micro_batch_holds_a_sequence(self.trainer),
            *checks.warmup_within_run(self.trainer, self.sft.max_steps, "sft.max_steps"),
            *checks.sft_loss_for_sft_data(self.trainer),
        ]


class RLRunSections(BaseModel):
    """The RL sections a server or router of an RL run accepts without reading them: one run file and one set
    of overrides (`--trainer.checkpoint.resume ...`) then start every process of the run, as the SLURM
    example does. They are validated all the same, so a typo in them is named by whichever process reads
    the file first."""

    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig, description="Not read here.")
    trainer: RLTrainerConfig = Field(default_factory=RLTrainerConfig, description="Not read here.")
    rl: RLSection = Field(default_factory=RLSection, description="Not read here.")


class RLConfig(RunConfig):
    """A reinforcement-learning run: inference servers, an orchestrator and a trainer."""

    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Rollout servers.")
    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig, description="Rollout loop.")
    trainer: RLTrainerConfig = Field(default_factory=RLTrainerConfig, description="Training loop.")
    rl: RLSection = Field(default_factory=RLSection, description="Run length.")

    def combination_problems(self) -> list[Problem]:
        return [
            *super().combination_problems(),
            *checks.micro_batch_holds_a_sequence(self.trainer),
            *checks.warmup_within_run(self.trainer, self.rl.max_steps, "rl.max_steps"),
            *checks.rl_checkpoints_every_step(self.trainer),
            *checks.servers_can_still_load_kept_checkpoints(self.trainer, self.orchestrator),
            *checks.vllm_needs_cuda(self.inference, self.trainer),
            *checks.remote_server_needs_token(self.inference),
            *checks.rollouts_fit_in_sequence(self.inference, self.trainer),
            *checks.completion_fits_in_context(self.orchestrator.max_tokens, "orchestrator.max_tokens", self.inference),
            *checks.groups_can_normalize(self.orchestrator),
        ]


class EvalConfig(RunConfig):
    """An evaluation run against an embedded server or a running endpoint."""

    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Embedded server.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Environment and sampling.")

    def combination_problems(self) -> list[Problem]:
        return [
            *super().combination_problems(),
            *checks.remote_server_needs_token(self.inference),
            *checks.completion_fits_in_context(self.eval.max_tokens, "eval.max_tokens", self.inference),
        ]

