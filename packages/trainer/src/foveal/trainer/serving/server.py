"""Run the app with uvicorn: in the foreground (`foveal serve`) or on a background thread (tests, embedding).

`ServerThread` binds the socket itself before uvicorn starts, so port 0 gets an OS-chosen port that is
known (and listening) by the time `start` returns; nothing is ever built from a request's Host header.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import socket
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from foveal.configs.errors import RunError
from foveal.configs.http import HttpLimits
from foveal.trainer.serving.http_server import uvicorn_config
from foveal.trainer.serving.app import AppSettings
from foveal.trainer.serving.backends.base import InferenceBackend
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.ports import port_setting

_START_TIMEOUT_S = 60.0


class VLLMNotInstalled(RunError):
    """`inference.backend = "vllm"` where the extra is not installed: the user's to change, in one line."""

    def __init__(self) -> None:
        super().__init__(
            "inference.backend 'vllm' needs vLLM, which is not installed: on a CUDA machine run "
            "`uv sync --extra vllm` (foveal-trainer[vllm]), or serve with --inference.backend transformers"
        )


def build_backend(config: ServeConfig, cache_root: Path | None = None) -> InferenceBackend:
    """The backend `[inference].backend` names (each imported only when chosen); `cache_root` is where
    `tiny:` models are built."""
    if config.inference.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise VLLMNotInstalled()
        from foveal.trainer.serving.backends.vllm import VLLMBackend

        return VLLMBackend(config, cache_root=cache_root)
    from foveal.trainer.serving.backends.transformers import TransformersBackend

    return TransformersBackend(config, cache_root=cache_root)


def app_settings(config: ServeConfig, control_token: str | None = None) -> AppSettings:
    """The configured token guards both planes; without one, the control plane gets a random token."""
    configured = config.inference.api_token.get_secret_value() if config.inference.api_token else None
    return AppSettings(
        control_token=control_token or configured or secrets.token_urlsafe(32),
        data_token=configured,
        max_request_bytes=config.inference.max_request_bytes,
        body_timeout_s=config.inference.http.body_timeout_s,
    )


def bind_socket(host: str, port: int, setting: str = "inference.port") -> socket.socket:
    """A listening socket on `host:port`; a port another socket holds is a `PortInUse` naming `setting`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with port_setting(host, port, setting, sock):
        sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """uvicorn serving `app` on an already-bound socket, in a daemon thread with its own event loop."""

    def __init__(self, app: FastAPI, sock: socket.socket, limits: HttpLimits | None = None) -> None:
        self.socket = sock
        limits = limits or HttpLimits()
        config = uvicorn_config(app, limits, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="foveal-inference-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the inference server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(_START_TIMEOUT_S)
        self.socket.close()

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))
