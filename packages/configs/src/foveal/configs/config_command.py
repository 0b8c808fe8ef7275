"""The builtin `foveal config` command: `show` prints a resolved config as TOML, `keys` lists every field.

`foveal --help` imports this module, so it holds only names and arguments; the actions need every pydantic
config model and live in `config_actions`, imported when `foveal config` runs.
"""

from __future__ import annotations

import argparse

from foveal.configs.arguments import add_config_arguments
from foveal.configs.command import Command, LazyRun


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="config_action", metavar="<action>", required=True)
    show = actions.add_parser(
        "show", help="Print the resolved config as TOML.", description="Print the resolved config as TOML."
    )
    add_config_arguments(show)
    _add_kind(show)
    keys = actions.add_parser("keys", help="List every key with its default.", description="List every key.")
    _add_kind(keys)


def _add_kind(parser: argparse.ArgumentParser) -> None:
    from foveal.configs.kinds import RUN_KINDS  # every config model: only once `foveal config` is chosen

    parser.add_argument("--kind", choices=sorted(RUN_KINDS), default="sft", help="Which run config (default: sft).")


command = Command(
    name="config",
    help="Show a resolved run config, or list its keys.",
    configure=_configure,
    run=LazyRun("foveal.configs.config_actions:main"),
)
