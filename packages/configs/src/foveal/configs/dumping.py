"""A config as TOML that loads back to an equal config (secrets masked, so those alone do not round-trip)."""

from __future__ import annotations

from typing import Any

import tomli_w
from pydantic import BaseModel


def to_toml(config: BaseModel) -> str:
    """TOML text of `config`; None values are left out (TOML has no null), which is why every
    optional field defaults to None: leaving it out loads back the same value."""
    return tomli_w.dumps(_without_none(config.model_dump(mode="json")))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value
