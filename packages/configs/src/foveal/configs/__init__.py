"""foveal.configs: typed settings for every Foveal component, loaded from TOML files and CLI overrides.

Names are resolved on first use (PEP 562), so `import foveal.configs.cli` or `foveal.configs.command` does
not build every pydantic model; `from foveal.configs import SFTConfig` imports only what that name needs.
"""

from foveal.configs.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "foveal.configs.arguments": ("add_config_arguments", "config_from_args"),
    "foveal.configs.command": ("ENTRY_POINT_GROUP", "Command", "LazyRun"),
    "foveal.configs.dflash": ("DFlashConfig", "DFlashSection", "DraftConfig"),
    "foveal.configs.dumping": ("to_toml",),
    "foveal.configs.errors": ("ConfigError", "IncompatibleSettings", "Problem", "UsageError"),
    "foveal.configs.inference": ("InferenceConfig",),
    "foveal.configs.jobs": ("EvalSection", "RLSection", "SFTSection"),
    "foveal.configs.loading": ("load_config",),
    "foveal.configs.logging": ("LoggingConfig",),
    "foveal.configs.model": ("ModelConfig",),
    "foveal.configs.multimodal": ("MultimodalConfig",),
    "foveal.configs.orchestrator": ("EnvironmentConfig", "OrchestratorConfig"),
    "foveal.configs.renderer": ("RendererConfig",),
    "foveal.configs.kinds": ("RUN_KINDS",),
    "foveal.configs.runs": ("EvalConfig", "RLConfig", "RunConfig", "SFTConfig"),
    "foveal.configs.tinker_service": ("TinkerServiceConfig", "TinkerServiceSection"),
    "foveal.configs.trainer": (
        "CheckpointConfig", "LossConfig", "OptimConfig", "RLCheckpointConfig", "RLLossConfig", "RLTrainerConfig",
        "ScheduleConfig", "TrainerConfig",
    ),
})  # fmt: skip
