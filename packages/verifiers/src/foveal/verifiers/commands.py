"""The verifiers' `foveal` subcommand (entry point in `foveal.commands`): name, help and arguments only.

`foveal --help` loads every command, so this module imports nothing of the eval runner; `run` is a
`LazyRun` that imports it only when `foveal eval` runs.
"""

from __future__ import annotations

import argparse

from foveal.configs.arguments import add_config_arguments
from foveal.configs.command import Command, LazyRun


def _configure_eval(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="Do not show the progress bar.")


eval_command = Command(
    name="eval",
    help="evaluate a model on an environment (embedded server or an endpoint); writes results and an HTML report",
    configure=_configure_eval,
    run=LazyRun("foveal.verifiers.eval.command:main"),
)
