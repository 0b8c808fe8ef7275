"""Every run config by kind, for `foveal config --kind` and the schema tests.

Its own module because the kinds declared beside their jobs (`dflash`, `tinker`) import `RunConfig`
from `runs`, so `runs` cannot list them without an import cycle.
"""

from __future__ import annotations

from foveal.configs.dflash import DFlashConfig
from foveal.configs.runs import EvalConfig, RLConfig, RunConfig, SFTConfig
from foveal.configs.tinker_service import TinkerServiceConfig

RUN_KINDS: dict[str, type[RunConfig]] = {
    "sft": SFTConfig,
    "rl": RLConfig,
    "eval": EvalConfig,
    "dflash": DFlashConfig,
    "tinker": TinkerServiceConfig,
}
