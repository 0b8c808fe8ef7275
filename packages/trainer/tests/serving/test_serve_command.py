"""`foveal serve` as users run it: a separate process, its control token in a 0600 file, never printed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from foveal.configs import ConfigError, RLConfig, RunConfig, load_config
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.router_command import RouterRunConfig
from foveal.trainer.serving.serve import write_token
from foveal.trainer.serving.server import app_settings


EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_an_api_token_only_the_control_plane_is_guarded_by_a_random_token(tmp_path: Path) -> None:
    settings = app_settings(ServeConfig())
    assert settings.data_token is None and len(settings.control_token) >= 32
    assert app_settings(ServeConfig()).control_token != settings.control_token
    path = write_token(tmp_path / "inference" / "control_token", settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == settings.control_token


def test_a_configured_api_token_guards_both_planes() -> None:
    config = ServeConfig.model_validate({"inference": {"api_token": "s3cret-token", "host": "0.0.0.0"}})
    settings = app_settings(config)
    assert settings.control_token == settings.data_token == "s3cret-token"
    assert "s3cret-token" not in repr(config) and "s3cret-token" not in str(config.inference)


def test_an_open_host_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="inference.api_token"):
        ServeConfig.model_validate({"inference": {"host": "0.0.0.0"}})
    assert isinstance(
        ServeConfig.model_validate({"inference": {"api_token": "x", "host": "::"}}).inference.api_token, SecretStr
    )


@pytest.mark.parametrize("config_class", [ServeConfig, RouterRunConfig])
def test_an_rl_run_file_and_its_overrides_configure_its_servers_and_router(config_class: type[RunConfig]) -> None:
    """The SLURM example hands every process the same file and overrides; the RL sections are checked, not read."""
    files = [EXAMPLES / "rl_qwen2_5_vl_3b.toml"]
    config = load_config(config_class, files, ["--trainer.checkpoint.resume", "true", "--inference.port", "8100"])
    rl = load_config(RLConfig, files)
    assert config.inference.model_copy(update={"port": rl.inference.port}) == rl.inference
    assert config.trainer.checkpoint.resume and config.orchestrator == rl.orchestrator
    with pytest.raises(ConfigError, match="trainer.optim.lrr: no such key"):
        load_config(config_class, files, ["--trainer.optim.lrr", "1e-5"])
    with pytest.raises(ConfigError, match="sft: no such key"):
        load_config(config_class, files, ["--sft.max_steps", "1"])


@pytest.mark.slow  # a fresh interpreter importing torch and transformers: ~40 s on a busy 2-core machine
def test_foveal_serve_runs_a_server_whose_control_token_is_only_in_a_private_file(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "foveal.configs", "serve", "--model.name_or_path", str(tiny_model_dir("qwen2_5_vl")),
        "--logging.run_dir", str(tmp_path), "--inference.port", str(port), "--inference.device", "cpu",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        token_file = tmp_path / "inference" / "control_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert httpx.post(f"{url}/control/pause", json={"mode": "keep"}).status_code == 401
        paused = httpx.post(f"{url}/control/pause", json={"mode": "keep"}, headers={"Authorization": f"Bearer {token}"})
        assert paused.json()["state"] == "paused"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert token not in output and str(token_file) in output
    assert f"http://127.0.0.1:{port}" in output
    assert os.environ.get("FOVEAL_TOKEN") is None  # nothing was passed through the environment
