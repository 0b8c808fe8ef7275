"""The plug-in shape of a `foveal` subcommand.

Packages register subcommands under the entry-point group `foveal.commands`; each entry point resolves
to a `Command`. The CLI lives in foveal-configs (which has no torch) and discovers the others, so the
dependency direction configs <- renderers <- verifiers <- trainer is never reversed.

`foveal --help` loads every command, so a package declares its commands in one light module and points
each `run` at its job module with `LazyRun`: torch is imported only when that command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

ENTRY_POINT_GROUP = "foveal.commands"


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure` adds its arguments to its parser, `run` executes it and returns the exit code."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class LazyRun:
    """A command's `run` that imports `target` ("module:function") only when called, not when help is shown."""

    target: str

    def __call__(self, args: argparse.Namespace) -> int:
        return self.load()(args)

    def load(self) -> Callable[[argparse.Namespace], int]:
        """The function `target` names (importing its module)."""
        module, _, function = self.target.partition(":")
        return getattr(import_module(module), function)
