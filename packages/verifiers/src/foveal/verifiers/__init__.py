"""foveal.verifiers: environments that turn datasets into scored rollouts a trainer learns from as is.

Names are resolved on first use (PEP 562), so `import foveal.verifiers` stays cheap: an environment
worker imports what it uses, and nothing here imports torch or the trainer.
"""

from foveal.configs.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
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
})  # fmt: skip
