"""`foveal serve-tinker`: serve the Tinker SDK's API for `[model]` in the foreground, until Ctrl-C.

    FOVEAL_TINKER_API_KEY=tml-... uv run foveal serve-tinker --config examples/tinker/serve_tiny.toml

Clients connect with `tinker.ServiceClient(base_url="http://127.0.0.1:8100", api_key="tml-...")`. The key is
read from the environment variable `[tinker].api_key_env` names, or from `[tinker].api_key_file`; it is never
printed. The SDK refuses keys that do not start with `tml-`, so the service refuses them too.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn

from foveal.configs.errors import RunError
from foveal.trainer.serving.http_server import uvicorn_config
from foveal.configs import config_from_args
from foveal.configs.tinker_service import TinkerServiceConfig, TinkerServiceSection
from foveal.trainer.serving.server import bind_socket
from foveal.trainer.tinker_service.app import create_app
from foveal.trainer.tinker_service.service import TinkerService

KEY_PREFIX = "tml-"


class ApiKeyError(RunError, ValueError):
    """The API key cannot be read or is not one the SDK would send; names where it was looked for."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        super().__init__(f"{field}: {expected}")


def read_api_key(section: TinkerServiceSection) -> str:
    """The key from `api_key_file` if set, else from the `api_key_env` variable; it must start with `tml-`."""
    if section.api_key_file is not None:
        try:
            key = section.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ApiKeyError("tinker.api_key_file", f"a readable file holding the API key ({error.strerror})") from None
        field = "tinker.api_key_file"
    else:
        key = os.environ.get(section.api_key_env, "").strip()
        field = "tinker.api_key_env"
        if not key:
            variable = section.api_key_env
            fix = f"export {variable}={KEY_PREFIX}... or set tinker.api_key_file"
            raise ApiKeyError(field, f"{variable} is not set: {fix}")
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + 16:
        raise ApiKeyError(field, f"an API key of the form {KEY_PREFIX}<at least 16 characters> (the SDK's format)")
    return key


def serve(config: TinkerServiceConfig) -> None:
    """Load the model, bind `[tinker].host:port`, serve until interrupted, then stop the samplers."""
    api_key = read_api_key(config.tinker)
    service = TinkerService(config)
    try:
        sock = bind_socket(config.tinker.host, config.tinker.port, setting="tinker.port")
        host = f"[{config.tinker.host}]" if ":" in config.tinker.host else config.tinker.host
        print(f"serve-tinker: {config.model.name_or_path} on http://{host}:{sock.getsockname()[1]}")
        app = create_app(service, api_key)
        server = uvicorn.Server(uvicorn_config(app, config.tinker.http, log_level="info", access_log=False))
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        print("serve-tinker: stopped")
    finally:
        service.close()


def main(args: argparse.Namespace) -> int:
    """`foveal serve-tinker` (declared in foveal.trainer.commands): serve until Ctrl-C."""
    serve(config_from_args(args, TinkerServiceConfig))
    return 0
