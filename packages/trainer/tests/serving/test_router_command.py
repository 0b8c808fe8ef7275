"""`foveal router` argument and config handling (the running command is exercised in tests/test_inference_fleet.py)."""

from __future__ import annotations

import pytest

from foveal.configs import InferenceConfig
from foveal.configs.cli import main
from foveal.trainer.serving.router_command import upstream_urls


def test_upstreams_default_to_the_local_servers() -> None:
    inference = InferenceConfig(host="127.0.0.1", port=8100, num_servers=3)
    assert upstream_urls(inference, []) == ("http://127.0.0.1:8100", "http://127.0.0.1:8101", "http://127.0.0.1:8102")
    assert upstream_urls(InferenceConfig(host="::1"), []) == ("http://[::1]:8000",)


def test_command_line_upstreams_win_over_the_config() -> None:
    inference = InferenceConfig.model_validate({"router": {"upstreams": ["http://10.0.0.1:8000"]}})
    assert upstream_urls(inference, []) == ("http://10.0.0.1:8000",)
    assert upstream_urls(inference, ["http://10.0.0.2:9000"]) == ("http://10.0.0.2:9000",)


def test_a_bad_upstream_is_a_config_error_that_hides_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["router", "--upstream", "ftp://alice:s3cret@host:1"]) == 2
    err = capsys.readouterr().err
    assert "--upstream" in err and "s3cret" not in err and "ftp://***@host:1" in err


def test_a_router_off_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["router", "--upstream", "http://127.0.0.1:1", "--inference.router.host", "0.0.0.0"]) == 2
    assert "inference.api_token" in capsys.readouterr().err
