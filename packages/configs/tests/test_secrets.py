"""The inference API token never appears in printed configs or error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from foveal.configs import ConfigError, RLConfig, load_config, to_toml
from foveal.configs.cli import main

TOKEN = "tok-9f2c41d7e8"


def test_config_show_masks_the_token_and_the_config_keeps_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rl.toml"
    config.write_text(f'[inference]\nhost = "0.0.0.0"\napi_token = "{TOKEN}"\n')
    assert main(["config", "show", "--kind", "rl", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and 'api_token = "**********"' in out
    assert load_config(RLConfig, [config]).inference.api_token.get_secret_value() == TOKEN


def test_errors_never_contain_the_token(tmp_path: Path) -> None:
    config = tmp_path / "rl.toml"
    config.write_text(f'[inference]\napi_token = ["{TOKEN}"]\napi_tokn = "{TOKEN}"\n[trainer]\nseq_len = "x"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(RLConfig, [config])
    message = str(excinfo.value)
    assert TOKEN not in message
    assert "inference.api_token: a valid string (got **********)" in message
    assert "inference.api_tokn: no such key (did you mean inference.api_token?)" in message


def test_cross_field_errors_do_not_echo_the_token() -> None:
    overrides = ["--inference.api_token", TOKEN, "--inference.backend", "vllm", "--trainer.device", "cpu"]
    with pytest.raises(ConfigError) as excinfo:
        load_config(RLConfig, overrides=overrides)
    assert TOKEN not in str(excinfo.value)


def test_repr_and_toml_of_a_config_hide_the_token() -> None:
    config = load_config(RLConfig, overrides=["--inference.api_token", TOKEN])
    assert TOKEN not in repr(config) and TOKEN not in to_toml(config)


def test_malformed_overrides_of_the_token_do_not_echo_it(tmp_path: Path) -> None:
    config = tmp_path / "rl.toml"
    config.write_text(f'[inference]\napi_token = "{TOKEN}"\n')
    overrides = ["--inference.api_token", f"[{TOKEN}", "--inference.api_token.inner", "1"]
    with pytest.raises(ConfigError) as excinfo:
        load_config(RLConfig, [config], overrides)
    assert TOKEN not in str(excinfo.value)
    assert [problem.key for problem in excinfo.value.problems] == ["inference.api_token", "inference.api_token"]
