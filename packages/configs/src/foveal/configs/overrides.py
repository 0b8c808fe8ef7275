"""Command-line overrides: `--trainer.optim.lr 1e-5` or `--trainer.optim.lr=1e-5`, for any field.

Hand-written rather than pydantic-settings' CliSettingsSource, which declares an argparse flag for every
field of every section: those flags would collide with each subcommand's own arguments, fill `--help`
with hundreds of lines, and report a typo as a bare argparse error instead of a dotted key with the
closest valid one. Here an override is just a dotted key and a string; pydantic coerces the string to
the field's type (int, float, bool, Path, Literal) exactly as it coerces TOML values.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from foveal.configs.errors import SECRET_MASK, Problem, preview

NULL = "null"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
IsSecret = Callable[[str], bool]


def _never_secret(key: str) -> bool:
    return False


def parse_overrides(
    tokens: Sequence[str], is_secret: IsSecret = _never_secret
) -> tuple[list[tuple[str, Any]], list[Problem]]:
    """Pairs (dotted key, value) in command-line order, and the problems of malformed tokens
    (the value of a key for which `is_secret` holds is masked)."""
    pairs: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("--"):
            problems.append(Problem(token, "an override like --section.key VALUE", got=preview(token)))
            continue
        key, has_value, raw = token[2:].partition("=")
        if not has_value:
            if index == len(tokens) or tokens[index].startswith("--"):
                problems.append(Problem(f"--{key}", "a value after the key", got="nothing"))
                continue
            raw, index = tokens[index], index + 1
        key = key.replace("-", "_")
        if not _KEY.fullmatch(key):
            problems.append(Problem(f"--{key}", "a dotted key of identifiers, like trainer.optim.lr"))
            continue
        try:
            pairs.append((key, parse_value(raw)))
        except ValueError:
            got = SECRET_MASK if is_secret(key) else preview(raw)
            problems.append(Problem(key, "a JSON or TOML list or table", got=got))
    return pairs, problems


def parse_value(raw: str) -> Any:
    """`null` is None; `[...]` and `{...}` are JSON or TOML inline values; anything else stays a string."""
    if raw == NULL:
        return None
    if not raw.startswith(("[", "{")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        raise ValueError(f"not a JSON or TOML value: {raw!r}") from None


def apply_overrides(
    data: dict[str, Any], pairs: Sequence[tuple[str, Any]], is_secret: IsSecret = _never_secret
) -> list[Problem]:
    """Set each dotted key in the nested `data` (in place), creating tables on the way."""
    problems: list[Problem] = []
    for key, value in pairs:
        *parents, leaf = key.split(".")
        table = data
        for depth, part in enumerate(parents):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                holder = ".".join(parents[: depth + 1])
                got = SECRET_MASK if is_secret(holder) else preview(table)
                problems.append(Problem(holder, f"a table to hold {key}", got=got))
                break
        else:
            table[leaf] = value
    return problems
