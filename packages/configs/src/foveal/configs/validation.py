"""Turns pydantic's ValidationError into `Problem`s: dotted keys, plain expectations, no secrets."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from foveal.configs.errors import SECRET_MASK, IncompatibleSettings, Problem, preview
from foveal.configs.schema import closest_key, dotted, is_secret


def problems_from(cls: type[BaseModel], error: ValidationError) -> list[Problem]:
    """One problem per pydantic error, in pydantic's order (cross-section problems expand to several)."""
    problems: list[Problem] = []
    for detail in error.errors():
        problems.extend(_problems_of(cls, detail))
    return problems


def _problems_of(cls: type[BaseModel], detail: ErrorDetails) -> list[Problem]:
    loc = detail["loc"]
    key = dotted(loc) or cls.__name__
    cause = detail.get("ctx", {}).get("error")
    if isinstance(cause, IncompatibleSettings):
        return [problem.under(dotted(loc)) for problem in cause.problems]
    if detail["type"] == "extra_forbidden":
        # The value of an unknown key is left out: it may be a mistyped secret.
        return [_unknown_key(cls, loc, key)]
    got = SECRET_MASK if is_secret(cls, loc) else preview(detail["input"])
    return [Problem(key, _expectation(detail["msg"]), got=got)]


def _unknown_key(cls: type[BaseModel], loc: tuple[int | str, ...], key: str) -> Problem:
    suggestion = closest_key(cls, loc)
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    return Problem(key, f"no such key{hint}")


def _expectation(message: str) -> str:
    """pydantic's message rephrased as what was expected: 'Input should be a valid integer' -> 'a valid integer'."""
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            return message.removeprefix(prefix)
    return message[:1].lower() + message[1:]
