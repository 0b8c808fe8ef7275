"""Loading a run config: TOML files merged in order, then command-line overrides, then validation.

pydantic-settings' TomlConfigSettingsSource is not used because it silently skips a missing file and
its decode errors do not name the file; and no environment-variable source exists on purpose: a config
is exactly what its files and command line say. See `overrides.py` for why overrides are hand-parsed.
Relative paths inside a config are relative to the working directory, not to the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from foveal.configs.errors import ConfigError, Problem
from foveal.configs.overrides import apply_overrides, parse_overrides
from foveal.configs.schema import is_secret
from foveal.configs.validation import problems_from

ConfigT = TypeVar("ConfigT", bound=BaseModel)
_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_config(
    cls: type[ConfigT], files: Sequence[Path | str] = (), overrides: Sequence[str] = ()
) -> ConfigT:
    """Build `cls` from TOML `files` (later wins, tables deep-merged) and `overrides` (win over files).

    Raises ConfigError listing every problem: unreadable or invalid files and malformed overrides first;
    when those are fine, every unknown key, wrong value and impossible combination.
    """

    def secret(key: str) -> bool:
        return is_secret(cls, key.split("."))

    data, problems = read_files(files)
    pairs, override_problems = parse_overrides(overrides, secret)
    problems += override_problems
    problems += apply_overrides(data, pairs, secret)
    if problems:
        raise ConfigError(problems, subject=cls.__name__)
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(problems_from(cls, error), subject=cls.__name__) from None


def read_files(files: Sequence[Path | str]) -> tuple[dict[str, Any], list[Problem]]:
    """The deep merge of every readable file, and one problem per file that could not be read."""
    merged: dict[str, Any] = {}
    problems: list[Problem] = []
    for file in files:
        try:
            merged = deep_merge(merged, read_toml(Path(file)))
        except ConfigError as error:
            problems.extend(error.problems)
    return merged, problems


def read_toml(path: Path) -> dict[str, Any]:
    """One TOML file as a dict; a missing or malformed file is a ConfigError naming it (and the line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "an existing TOML file", got="no such file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([Problem(str(path), "a readable UTF-8 TOML file", got=str(error))]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(path, str(error))]) from None


def _syntax_problem(path: Path, message: str) -> Problem:
    at = _AT_LINE.search(message)
    where = f"{path}:{at.group(1)}:{at.group(2)}" if at else str(path)
    reason = message[: at.start()] if at else message
    return Problem(where, "valid TOML", got=reason[:1].lower() + reason[1:])


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`: tables merge key by key, anything else (arrays included) is replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
