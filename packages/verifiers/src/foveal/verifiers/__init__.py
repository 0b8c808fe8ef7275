"""foveal.verifiers: environments that turn datasets into scored rollouts a trainer learns from as is.

Names are resolved on first use (PEP 562), so `import foveal.verifiers` stays cheap: an environment
worker imports what it uses, and nothing here imports torch or the trainer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "foveal.verifiers.dataset": ("Dataset", "DatasetError", "Example", "Split"),
    "foveal.verifiers.environment": ("Environment", "EnvironmentConfigError", "MultiTurnEnv", "SingleTurnEnv", "State"),
    "foveal.verifiers.tool_env": ("ToolEnv",),
    "foveal.verifiers.tools": ("Tool", "ToolCallFailed", "ToolDefinitionError"),
    "foveal.verifiers.rubric": ("Rubric", "RubricError"),
    "foveal.verifiers.judge": ("Judge",),
    "foveal.verifiers.parsers": ("BoxedParser", "MultipleChoiceParser", "Parser", "TaggedParser", "normalize_answer"),
    "foveal.verifiers.rewards": ("answer_mentioned", "exact_match", "has_answer"),
    "foveal.verifiers.rollout": (
        "ErrorRecord", "ImageAsset", "Rollout", "RolloutError", "RolloutImage", "RolloutSequence", "Turn",
    ),
    "foveal.verifiers.policy": ("Episode", "InferenceClient", "Policy", "PolicyError"),
    "foveal.verifiers.token_policy": ("TokenPolicy",),
    "foveal.verifiers.chat_policy": ("ChatPolicy", "OpenAIChatClient"),
    "foveal.verifiers.registry": (
        "EnvironmentArgumentError", "EnvironmentNotFound", "available_environments", "load_environment",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'foveal.verifiers' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
