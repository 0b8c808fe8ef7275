"""Start a real server in this process, for tests and notebooks: `start_server(config)`.

    with start_server(ServeConfig(...)) as server:
        httpx.post(f"{server.url}/v1/generate", json=..., headers=server.data_headers)
        httpx.post(f"{server.url}/control/pause", json={"mode": "wait"}, headers=server.control_headers)

It binds `[inference].host` on an OS-chosen port (port 0; loopback by default), serves on a background
thread, and `stop()` (or leaving the `with` block) shuts uvicorn and the engine down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from foveal.trainer.serving.app import create_app
from foveal.trainer.serving.backends.base import InferenceBackend
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.server import ServerThread, app_settings, bind_socket, build_backend


@dataclass
class RunningServer:
    """A live server: its base URL, its control token, and the backend behind it (same process)."""

    url: str
    token: str
    backend: InferenceBackend
    _thread: ServerThread = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return self._thread.port

    @property
    def control_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def data_headers(self) -> dict[str, str]:
        """Headers for /v1 routes: the same token (required only when `[inference].api_token` is set)."""
        return self.control_headers

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._thread.stop()
        finally:
            self.backend.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def start_server(
    config: ServeConfig, *, backend: InferenceBackend | None = None, cache_root: Path | None = None
) -> RunningServer:
    """Build the backend (or use `backend`), serve it on `[inference].host`, port 0, and return once it listens.

    `cache_root` is where `tiny:` models are built (tests pass a temporary folder).
    """
    backend = backend if backend is not None else build_backend(config, cache_root)
    settings = app_settings(config)
    try:
        sock = bind_socket(config.inference.host, 0)
        thread = ServerThread(create_app(backend, settings), sock, config.inference.http)
        thread.start()
    except BaseException:
        backend.close()
        raise
    host = f"[{config.inference.host}]" if ":" in config.inference.host else config.inference.host
    return RunningServer(f"http://{host}:{thread.port}", settings.control_token, backend, thread)
