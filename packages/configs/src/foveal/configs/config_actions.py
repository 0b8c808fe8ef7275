"""What `foveal config show` and `foveal config keys` do (the command itself is in `config_command`)."""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from foveal.configs.arguments import config_from_args
from foveal.configs.dumping import to_toml
from foveal.configs.kinds import RUN_KINDS
from foveal.configs.schema import iter_fields


def main(args: argparse.Namespace) -> int:
    """Run the action `args.config_action` names."""
    return show(args) if args.config_action == "show" else keys(args)


def show(args: argparse.Namespace) -> int:
    """Print the resolved config of `--kind` as TOML."""
    print(to_toml(config_from_args(args, RUN_KINDS[args.kind])), end="")
    return 0


def keys(args: argparse.Namespace) -> int:
    """List every dotted key of `--kind` with its type, default and description."""
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
