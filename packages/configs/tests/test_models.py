"""Every section is strict, documented, and usable with no file at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from foveal.configs import RUN_KINDS, MultimodalConfig, RLConfig, SFTConfig
from foveal.configs.schema import iter_fields, submodel


def every_model() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = list(RUN_KINDS.values())
    while pending:
        model = pending.pop()
        if model.__qualname__ not in seen:
            seen[model.__qualname__] = model
            pending.extend(sub for field in model.model_fields.values() if (sub := submodel(field)))
    return sorted(seen.values(), key=lambda model: model.__qualname__)


@pytest.mark.parametrize("model", every_model(), ids=lambda model: model.__qualname__)
def test_every_section_forbids_unknown_keys_and_is_immutable(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


@pytest.mark.parametrize("model", every_model(), ids=lambda model: model.__qualname__)
def test_every_field_has_a_default_and_a_one_line_description(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.get_default(call_default_factory=True) is not PydanticUndefined, name
        assert field.description and "\n" not in field.description, name


@pytest.mark.parametrize("kind", sorted(RUN_KINDS))
def test_optional_fields_default_to_none_so_toml_without_null_round_trips(kind: str) -> None:
    for key, field in iter_fields(RUN_KINDS[kind]):
        if not field.is_required() and type(None) in getattr(field.annotation, "__args__", ()):
            assert field.get_default(call_default_factory=True) is None, key


def test_rl_and_sft_share_the_multimodal_section_type_declared_once() -> None:
    assert RLConfig().multimodal == SFTConfig().multimodal == MultimodalConfig()
    assert [name for name, _ in iter_fields(RLConfig) if name.endswith("offload_dir")] == ["multimodal.offload_dir"]


def test_store_dir_defaults_to_assets_inside_the_run_dir(tmp_path: Path) -> None:
    config = SFTConfig.model_validate({"logging": {"run_dir": str(tmp_path)}})
    assert config.store_dir() == (tmp_path / "assets").resolve()
