"""The builtin `foveal config` command: `show` prints a resolved config as TOML, `keys` lists every field."""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from foveal.configs.arguments import add_config_arguments, config_from_args
from foveal.configs.command import Command
from foveal.configs.dumping import to_toml
from foveal.configs.kinds import RUN_KINDS
from foveal.configs.schema import iter_fields


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="config_action", metavar="<action>", required=True)
    show = actions.add_parser(
        "show", help="Print the resolved config as TOML.", description="Print the resolved config as TOML."
    )
    add_config_arguments(show)
    _add_kind(show)
    show.set_defaults(config_run=_show)
    keys = actions.add_parser("keys", help="List every key with its default.", description="List every key.")
    _add_kind(keys)
    keys.set_defaults(config_run=_keys)


def _add_kind(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=sorted(RUN_KINDS), default="sft", help="Which run config (default: sft).")


def _run(args: argparse.Namespace) -> int:
    return args.config_run(args)


def _show(args: argparse.Namespace) -> int:
    print(to_toml(config_from_args(args, RUN_KINDS[args.kind])), end="")
    return 0


def _keys(args: argparse.Namespace) -> int:
    for key, field in iter_fields(RUN_KINDS[args.kind]):
        print(f"{key} : {_type_name(field.annotation)} = {_default(field)}\n    {field.description}")
    return 0


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " | ".join(repr(choice) for choice in get_args(annotation))
    if get_origin(annotation) is None and isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return "(required)" if value is PydanticUndefined else repr(value)


command = Command(name="config", help="Show a resolved run config, or list its keys.", configure=_configure, run=_run)
