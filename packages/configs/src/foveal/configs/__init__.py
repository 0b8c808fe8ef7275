"""foveal.configs: typed settings for every Foveal component, loaded from TOML files and CLI overrides."""

from foveal.configs.arguments import add_config_arguments, config_from_args
from foveal.configs.command import ENTRY_POINT_GROUP, Command
from foveal.configs.dflash import DFlashConfig, DFlashSection, DraftConfig
from foveal.configs.dumping import to_toml
from foveal.configs.errors import ConfigError, IncompatibleSettings, Problem, UsageError
from foveal.configs.inference import InferenceConfig
from foveal.configs.jobs import EvalSection, RLSection, SFTSection
from foveal.configs.loading import load_config
from foveal.configs.logging import LoggingConfig
from foveal.configs.model import ModelConfig
from foveal.configs.multimodal import MultimodalConfig
from foveal.configs.orchestrator import EnvironmentConfig, OrchestratorConfig
from foveal.configs.renderer import RendererConfig
from foveal.configs.kinds import RUN_KINDS
from foveal.configs.runs import EvalConfig, RLConfig, RunConfig, SFTConfig
from foveal.configs.tinker_service import TinkerServiceConfig, TinkerServiceSection
from foveal.configs.trainer import (
    CheckpointConfig,
    LossConfig,
    OptimConfig,
    RLCheckpointConfig,
    RLLossConfig,
    RLTrainerConfig,
    ScheduleConfig,
    TrainerConfig,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "RUN_KINDS",
    "CheckpointConfig",
    "Command",
    "ConfigError",
    "DFlashConfig",
    "DFlashSection",
    "DraftConfig",
    "EnvironmentConfig",
    "EvalConfig",
    "EvalSection",
    "IncompatibleSettings",
    "InferenceConfig",
    "LoggingConfig",
    "LossConfig",
    "ModelConfig",
    "MultimodalConfig",
    "OptimConfig",
    "OrchestratorConfig",
    "Problem",
    "RLCheckpointConfig",
    "RLConfig",
    "RLLossConfig",
    "RLSection",
    "RLTrainerConfig",
    "RendererConfig",
    "RunConfig",
    "SFTConfig",
    "SFTSection",
    "TinkerServiceConfig",
    "TinkerServiceSection",
    "ScheduleConfig",
    "TrainerConfig",
    "UsageError",
    "add_config_arguments",
    "config_from_args",
    "load_config",
    "to_toml",
]
