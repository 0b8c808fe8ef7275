"""Walks the config models as a tree of dotted keys: for error suggestions, secret masking and `config keys`."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

Loc = Sequence[int | str]


def _type_args(annotation: Any) -> tuple[Any, ...]:
    """The types inside an annotation: union members, list items, dict values."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return get_args(annotation)
    if origin in (list, tuple, set, frozenset):
        return get_args(annotation)
    if origin is dict:
        return get_args(annotation)[1:]
    return ()


def _contains(annotation: Any, wanted: type) -> type | None:
    """The first subclass of `wanted` found anywhere in `annotation`, else None."""
    if get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, wanted):
        return annotation
    for arg in _type_args(annotation):
        found = _contains(arg, wanted)
        if found is not None:
            return found
    return None


def submodel(field: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds (directly, optionally, or as list items), if any."""
    return _contains(field.annotation, BaseModel)


def field_at(cls: type[BaseModel], loc: Loc) -> FieldInfo | None:
    """The field a validation location points to; list indices are stepped over."""
    model: type[BaseModel] | None = cls
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = submodel(field)
    return field


def is_secret(cls: type[BaseModel], loc: Loc) -> bool:
    """Whether the value at `loc` is a secret and must never be shown."""
    field = field_at(cls, loc)
    return field is not None and _contains(field.annotation, SecretStr) is not None


def iter_fields(cls: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field as (dotted key, field); list items of models appear as `key[].field`."""
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        model = submodel(field)
        if model is None:
            yield key, field
        else:
            holds_list = get_origin(field.annotation) is list
            yield from iter_fields(model, f"{key}[]." if holds_list else f"{key}.")


def dotted(loc: Loc) -> str:
    """A validation location as users write it: `orchestrator.environments[0].name`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(cls: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    if not any(isinstance(part, str) for part in loc):
        return cls
    field = field_at(cls, loc)
    return submodel(field) if field is not None else None


def closest_key(cls: type[BaseModel], loc: Loc) -> str | None:
    """The valid key a user most likely meant by the unknown key at `loc` (a sibling, or the same name elsewhere)."""
    parent, name = loc[:-1], str(loc[-1])
    model = _model_at(cls, parent)
    near = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.6) if model else []
    if near:
        return dotted([*parent, near[0]])
    elsewhere = [key for key, _ in iter_fields(cls) if key.rsplit(".", 1)[-1] == name]
    return elsewhere[0] if elsewhere else None
