"""The environments of a run (`[[orchestrator.environments]]`), loaded once, each with a label for metrics.

A label is the environment's name, or `name[i]` when the mixture holds the same environment twice (with
other arguments), so `reward/<label>` never merges two of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from foveal.configs.orchestrator import EnvironmentConfig
from foveal.verifiers.environment import Environment
from foveal.verifiers.registry import load_environment


@dataclass(frozen=True)
class Mixture:
    """Loaded environments, their labels and their sampling weights, in config order."""

    environments: tuple[Environment, ...]
    labels: tuple[str, ...]
    weights: tuple[float, ...]
    configs: tuple[EnvironmentConfig, ...]

    def train_sizes(self) -> list[int]:
        """Rows in each environment's train split (an environment without one is an error naming it)."""
        return [len(environment.dataset("train")) for environment in self.environments]


def load_mixture(configs: Sequence[EnvironmentConfig]) -> Mixture:
    """Load every environment of the mixture through the registry (entry points), with its arguments."""
    environments = tuple(load_environment(entry.name, **entry.args) for entry in configs)
    repeated = Counter(entry.name for entry in configs)
    labels = tuple(
        entry.name if repeated[entry.name] == 1 else f"{entry.name}[{index}]" for index, entry in enumerate(configs)
    )
    return Mixture(environments, labels, tuple(entry.weight for entry in configs), tuple(configs))
