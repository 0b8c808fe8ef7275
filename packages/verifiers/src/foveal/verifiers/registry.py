"""Environments by name: installable packages register a loader under the `foveal.environments` group.

A package exposes `load_environment(**args) -> Environment` and declares it in its pyproject:

    [project.entry-points."foveal.environments"]
    shapes = "foveal.verifiers.environments.shapes:load_environment"

`load_environment("shapes", num_eval=50)` finds it after `pip install`, with no import list to edit. The
arguments are checked against the loader's signature first, so a typo is an error naming the argument
and the ones the environment takes, not a TypeError from deep inside it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from foveal.verifiers.environment import Environment

ENTRY_POINT_GROUP = "foveal.environments"


class EnvironmentNotFound(LookupError):
    """No installed package registers an environment under this name."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name, self.available = name, available
        super().__init__(f"environment {name!r} is not installed; installed environments: {available}")


class EnvironmentArgumentError(ValueError):
    """Arguments the environment's loader does not take (or required ones missing): names them."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


def available_environments() -> list[str]:
    """Names of the installed environments, sorted."""
    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)})


def load_environment(name: str, **args: Any) -> Environment:
    """The environment registered as `name`, built with `args`."""
    loader = _loader(_entry_point(name))
    _check_arguments(name, loader, args)
    environment = loader(**args)
    if not isinstance(environment, Environment):
        raise EnvironmentArgumentError(f"environment {name!r}", type(environment).__name__, "an Environment")
    return environment


def _entry_point(name: str) -> EntryPoint:
    found = [entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == name]
    if not found:
        raise EnvironmentNotFound(name, available_environments())
    return found[0]


def _loader(entry: EntryPoint) -> Callable[..., Any]:
    loader = entry.load()
    if not callable(loader):
        raise EnvironmentArgumentError(f"entry point {entry.name!r}", entry.value, "a callable load_environment")
    return loader


def _check_arguments(name: str, loader: Callable[..., Any], args: dict[str, Any]) -> None:
    signature = inspect.signature(loader)
    try:
        signature.bind(**args)
    except TypeError as error:
        takes = [p for p in signature.parameters if signature.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
        expected = f"arguments it takes ({error}); it takes {takes}"
        raise EnvironmentArgumentError(f"environment {name!r} arguments", sorted(args), expected) from None
