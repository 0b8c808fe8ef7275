"""The embedded backend's engine: continuous batching over a left-padded KV cache, one model thread.

`scheduler.Engine` is the entry point; `runner` holds the model forwards, `batching` the running batch,
`kv` the cache operations, `sampling` and `stopping` the per-token decisions, `prompt_cache` reused prefills.
"""

from foveal.trainer.serving.engine.requests import (
    Aborted,
    EngineError,
    EngineRequest,
    EngineResult,
    Overloaded,
    SampledCompletion,
    TokenEvent,
    Unavailable,
)
from foveal.trainer.serving.engine.runner import ModelRunner
from foveal.trainer.serving.engine.scheduler import Engine, EngineSettings, EngineStats

__all__ = [
    "Aborted",
    "Engine",
    "EngineError",
    "EngineRequest",
    "EngineResult",
    "EngineSettings",
    "EngineStats",
    "ModelRunner",
    "Overloaded",
    "SampledCompletion",
    "TokenEvent",
    "Unavailable",
]
