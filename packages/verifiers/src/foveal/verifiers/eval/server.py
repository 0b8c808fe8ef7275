"""The embedded inference server of `foveal eval`: `foveal serve` as a child process.

A process boundary, not an import: foveal-verifiers never imports the trainer (which owns the server and
torch), and a crash or a leak in the model cannot take the eval with it. The child gets the eval's own
`[model]`, `[renderer]`, `[multimodal]`, `[logging]` and `[inference]` sections through a TOML file
(mode 0600: it may hold the API token), so it serves the same model with the same image store the
renderer here writes to. Its output goes to `server.log` beside the results. It is ready when /health
answers; it is stopped with SIGTERM (then SIGKILL after a grace period) however the eval ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
import tomli_w

from foveal.verifiers.child_processes import die_with_parent
from foveal.configs.runs import EvalConfig
from foveal.renderers.inference.wire import Endpoints

SERVE_CONFIG_FILE = "serve.toml"
LOG_FILE = "server.log"
_STOP_GRACE_S = 30.0
_POLL_S = 0.25


class ServerStartError(RuntimeError):
    """The embedded server exited or did not answer /health in time; the message quotes its log's tail."""


class EmbeddedServer:
    """`with EmbeddedServer(config, folder) as url:` serves the config's model until the block ends."""

    def __init__(self, config: EvalConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def __enter__(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port(self.config.inference.host)
        config_path = write_serve_config(self.config, port, self.folder / SERVE_CONFIG_FILE)
        command = [sys.executable, "-m", "foveal.configs", "serve", "--config", str(config_path)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
            )  # a SIGKILLed `foveal eval` takes its server with it
        host = self.config.inference.host
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        try:
            self._wait_healthy(url)
        except BaseException:
            self.stop()
            raise
        return url

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it is still there after the grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_healthy(self, url: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.config.eval.server_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise ServerStartError(f"`foveal serve` (foveal-trainer) exited with {code}{self._log_tail()}")
                try:
                    if http.get(url + Endpoints.HEALTH).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(_POLL_S)
        waited = self.config.eval.server_timeout_s
        raise ServerStartError(f"`foveal serve` did not answer {Endpoints.HEALTH} in {waited} s{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)


def write_serve_config(config: EvalConfig, port: int, path: Path) -> Path:
    """The eval's server-side sections as `foveal serve` reads them, the port set, the token in clear."""
    data = config.model_dump(mode="json", exclude={"eval"}, exclude_none=True)
    data["inference"]["port"] = port
    if config.inference.api_token is not None:
        data["inference"]["api_token"] = config.inference.api_token.get_secret_value()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        tomli_w.dump(data, handle)
    return path


def free_port(host: str) -> int:
    """A port the OS reports free on `host` now; the child binds it a moment later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
