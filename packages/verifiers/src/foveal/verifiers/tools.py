"""Plain Python functions as tools: a JSON schema from the signature, validated calls, text results.

The schema comes from the type annotations (through a pydantic model, so `Literal`, defaults, lists and
nested models all work) and the docstring: its first paragraph describes the tool, and a Google-style
`Args:` section describes the parameters. The same model validates the arguments the model sampled, so
a call with a wrong or missing argument comes back to the model as an error message naming the
argument instead of running the function with garbage.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from foveal.renderers.messages import FunctionSpec, ToolSpec

_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)$")
_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


class ToolDefinitionError(ValueError):
    """A function that cannot be offered as a tool (unannotated or variadic parameter): names it."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


class ToolCallFailed(Exception):
    """A call that could not run: unknown tool, arguments that are not valid JSON or fail validation."""


class Tool:
    """One function offered to the model: `spec` for the prompt, `await tool(arguments)` to run it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.name = func.__name__
        summary, described = _docstring(func)
        self._arguments = _arguments_model(func, described)
        schema = _without_titles(self._arguments.model_json_schema())
        self.spec = ToolSpec(function=FunctionSpec(name=self.name, description=summary or None, parameters=schema))

    async def __call__(self, arguments: dict[str, Any] | str) -> str:
        """The function's result as text (JSON for non-strings); bad arguments raise ToolCallFailed."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as error:
                raise ToolCallFailed(f"arguments of {self.name!r} are not valid JSON: {error}") from None
        if not isinstance(arguments, dict):
            raise ToolCallFailed(f"arguments of {self.name!r} must be a JSON object, got {type(arguments).__name__}")
        try:
            validated = self._arguments.model_validate(arguments)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
            raise ToolCallFailed(f"bad arguments for {self.name!r}: {problems}") from None
        result = self.func(**{name: getattr(validated, name) for name in type(validated).model_fields})
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


def _arguments_model(func: Callable[..., Any], described: dict[str, str]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    try:
        signature = inspect.signature(func, eval_str=True)  # string annotations (PEP 563) become types
    except NameError as error:
        raise ToolDefinitionError(func.__name__, str(error), "annotations that resolve in its module") from None
    for parameter in signature.parameters.values():
        where = f"{func.__name__}.{parameter.name}"
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolDefinitionError(where, str(parameter), "named parameters only (no *args or **kwargs)")
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolDefinitionError(where, str(parameter), "a parameter that can be passed by name")
        if parameter.annotation is inspect.Parameter.empty:
            raise ToolDefinitionError(where, parameter.name, "a type annotation (it becomes the JSON schema)")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (parameter.annotation, Field(default, description=described.get(parameter.name)))
    return create_model(f"{func.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


def _docstring(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each `Args:` entry's text by parameter name."""
    doc = inspect.getdoc(func) or ""
    summary = " ".join(doc.split("\n\n")[0].split())
    described: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args and line and not line.startswith(" "):
            in_args = False
        match = _ARG_LINE.match(line) if in_args else None
        if match:
            described[match.group(1)] = match.group(2).strip()
    return summary, described


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema minus its generated `title`s (noise in a prompt); a property *named* title stays,
    and only subschemas are walked, never values such as defaults or enums."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _without_titles(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_without_titles(sub) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            value = _without_titles(value)
        out[key] = value
    return out
