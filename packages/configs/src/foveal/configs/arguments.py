"""What every config-driven subcommand shares: `--config FILE` (repeatable) and `--section.key VALUE` overrides.

A subcommand calls `add_config_arguments(parser)` in `configure` and `config_from_args(args, SFTConfig)`
in `run`. Overrides are not argparse flags: `parse_args` hands the arguments argparse does not know to
`args.overrides`, in order, and `load_config` checks them against the config's fields.

pydantic is imported only by `config_from_args`, so building the parser for `foveal --help` stays cheap.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from foveal.configs.errors import UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

ConfigT = TypeVar("ConfigT", bound="BaseModel")
OVERRIDES_HELP = (
    "Any config field can be set after the files: --section.key VALUE or --section.key=VALUE "
    "(e.g. --trainer.optim.lr 1e-5); lists and tables as JSON or TOML, null for None. "
    "`foveal config keys` lists every key."
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Give `parser` the `--config` files option and accept `--section.key VALUE` overrides."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="TOML config file; repeat to merge several, later files win.",
    )
    parser.set_defaults(overrides=[])
    parser.epilog = f"{parser.epilog}\n\n{OVERRIDES_HELP}" if parser.epilog else OVERRIDES_HELP


def config_from_args(args: argparse.Namespace, cls: type[ConfigT]) -> ConfigT:
    """The run config named by `args` (files, then overrides); raises ConfigError listing every problem."""
    from foveal.configs.loading import load_config  # pydantic: only when a command runs

    return load_config(cls, getattr(args, "config", []), getattr(args, "overrides", []))


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`; leftover `--key value` arguments become `args.overrides` where the chosen
    (sub)command accepts them, and a usage error elsewhere."""
    args, rest = parser.parse_known_args(list(argv))
    if rest and not hasattr(args, "overrides"):
        raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.overrides = rest
    return args
