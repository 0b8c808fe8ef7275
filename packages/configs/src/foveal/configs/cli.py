"""The `foveal` command: the builtin `config` plus every subcommand registered under `foveal.commands`.

Usage and config errors print `foveal: error: <reason>` (a ConfigError adds one line per problem) and
exit with status 2. Plug-in commands are loaded only when needed, and a plug-in that fails to load is
reported on one stderr line while the others keep working. Only the chosen command adds its arguments,
so `foveal --help` imports no config model (pydantic) and no command's job module (torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points, version
from typing import NoReturn

from foveal.configs import config_command
from foveal.configs.arguments import parse_args
from foveal.configs.command import ENTRY_POINT_GROUP, Command
from foveal.configs.errors import ConfigError, RunError, UsageError

BUILTINS: tuple[Command, ...] = (config_command.command,)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so `main` owns the output.

    Abbreviations are off: `--con` must never be taken for `--config`, nor an override for an option.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `foveal` subcommand and return its exit status (2 for usage or config errors, 1 for a `RunError`:
    one line, no traceback unless `--debug`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        requested = _requested(argv)
        parser = build_parser([*BUILTINS, *discover_commands(requested)], requested)
        args = parse_args(parser, argv)
    except SystemExit as exit_:  # --help and --version end parsing this way, with status 0
        return exit_.code if isinstance(exit_.code, int) else 0
    except (UsageError, ConfigError) as error:
        return _fail(error)
    try:
        return args.foveal_command.run(args)
    except ConfigError as error:
        return _fail(error)
    except RunError as error:
        if args.debug:
            raise
        print(f"foveal {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _output_closed()


def _fail(error: Exception) -> int:
    print(f"foveal: error: {error}", file=sys.stderr)
    return 2


def _output_closed() -> int:
    """The reader of stdout went away (`foveal config keys | head`): one line, no traceback, exit status 1.

    stdout is pointed at /dev/null first, so the interpreter's last flush of it cannot fail a second time."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print("foveal: error: the output was closed before the command finished (broken pipe)", file=sys.stderr)
    return 1


def build_parser(commands: Sequence[Command], requested: str | None) -> ArgumentParser:
    """The top-level parser with one subparser per command; only `requested` adds its arguments."""
    parser = ArgumentParser(prog="foveal", description="Train vision-language models with SFT and RL.")
    parser.add_argument("--version", action="version", version=f"foveal {version('foveal-configs')}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of run-time errors")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if command.name == requested:
            command.configure(sub)
        sub.set_defaults(foveal_command=command)
    return parser


def discover_commands(only: str | None = None) -> list[Command]:
    """The plug-in commands (just `only` when given), skipping and reporting any that fail to load."""
    taken = {command.name for command in BUILTINS}
    commands: list[Command] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if only is not None and entry_point.name != only:
            continue
        command = _load(entry_point, taken)
        if command is not None:
            taken.add(command.name)
            commands.append(command)
    return commands


def _load(entry_point: EntryPoint, taken: set[str]) -> Command | None:
    """The entry point's Command, or None after one warning line on stderr."""
    if entry_point.name in taken:
        _warn(entry_point, "a command with this name already exists")
        return None
    try:
        command = entry_point.load()
    except Exception as error:  # noqa: BLE001 - a broken plug-in of any kind must not take the whole CLI down
        _warn(entry_point, f"{type(error).__name__}: {error}".splitlines()[0])
        return None
    if not isinstance(command, Command):
        _warn(entry_point, f"expected a foveal.configs.command.Command, got {type(command).__name__}")
        return None
    if command.name in taken:
        _warn(entry_point, f"command name {command.name!r} is already taken")
        return None
    return command


def _warn(entry_point: EntryPoint, reason: str) -> None:
    print(f"foveal: warning: skipping command {entry_point.name!r} ({entry_point.value}): {reason}", file=sys.stderr)


def _requested(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, None when there is none (help lists every command).

    An unknown name is a usage error decided from the names alone, so no plug-in is imported for it.
    """
    plugins = [entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP)]
    names = [*(command.name for command in BUILTINS), *plugins]
    first = next((token for token in argv if not token.startswith("-")), None)
    if first is not None and first not in names:
        choices = ", ".join(repr(name) for name in dict.fromkeys(names))
        raise UsageError(f"argument <command>: invalid choice: {first!r} (choose from {choices})")
    return first
