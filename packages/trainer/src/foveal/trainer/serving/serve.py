"""`foveal serve`: one inference server in the foreground, until Ctrl-C.

    uv run foveal serve --config run.toml --inference.port 8001 --model.name_or_path tiny:qwen2_5_vl

The control plane always needs a bearer token. With `[inference].api_token` set, that token guards both
planes; without it (loopback only, enforced by the config checks) a random control token is written to
`<run dir>/inference/control_token` (mode 0600) and only its path is printed, never the token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import uvicorn

from foveal.trainer.serving.http_server import uvicorn_config
from foveal.configs import config_from_args
from foveal.trainer.serving.app import AppSettings, create_app
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.server import app_settings, bind_socket, build_backend
from foveal.trainer.runs.layout import CONTROL_TOKEN_FILE



def serve(config: ServeConfig) -> None:
    """Load the backend, bind `[inference].host:port`, serve until interrupted, then shut the engine down."""
    backend = build_backend(config)
    try:
        settings = app_settings(config)
        if settings.data_token is None:
            print(f"serve: control token in {write_token(config.logging.run_dir / CONTROL_TOKEN_FILE, settings)}")
        sock = bind_socket(config.inference.host, config.inference.port)
        host = f"[{config.inference.host}]" if ":" in config.inference.host else config.inference.host
        print(f"serve: {config.model.name_or_path} on http://{host}:{sock.getsockname()[1]}")
        app = create_app(backend, settings)
        server = uvicorn.Server(uvicorn_config(app, config.inference.http, log_level="info", access_log=False))
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        print("serve: stopped")  # uvicorn has already shut down gracefully and re-raised the signal
    finally:
        backend.close()


def write_token(path: Path, settings: AppSettings) -> Path:
    """Write the control token readable by this user only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(settings.control_token + "\n")
    return path


def main(args: argparse.Namespace) -> int:
    """`foveal serve` (declared in foveal.trainer.commands): serve until Ctrl-C."""
    serve(config_from_args(args, ServeConfig))
    return 0
