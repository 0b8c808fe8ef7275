"""The plug-in shape of a `foveal` subcommand.

Packages register subcommands under the entry-point group `foveal.commands`; each entry point resolves
to a `Command`. The CLI lives in foveal-configs (which has no torch) and discovers the others, so the
dependency direction configs <- renderers <- verifiers <- trainer is never reversed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

ENTRY_POINT_GROUP = "foveal.commands"


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure` adds its arguments to its parser, `run` executes it and returns the exit code."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
