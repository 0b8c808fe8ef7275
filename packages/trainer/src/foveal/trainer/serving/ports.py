"""The port a command listens on, when another socket already holds it: the user's to change, so one line naming
the setting (`foveal serve`, `foveal router`, `foveal serve-tinker`), not a traceback."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from foveal.configs.errors import RunError


class PortInUse(RunError):
    """Binding `host:port` failed because the address is taken; names the setting that picks another port."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        self.host, self.port, self.setting = host, port, setting
        super().__init__(
            f"port {port} on {host} is in use: pass --{setting} another port (0 lets the system pick one), "
            "or stop the process that holds it"
        )


@contextmanager
def port_setting(host: str, port: int, setting: str, sock: socket.socket | None = None) -> Iterator[None]:
    """Around a bind of `host:port` (by `sock`, closed when it fails): an address in use becomes `PortInUse`
    naming `setting`; other errors pass."""
    try:
        yield
    except OSError as error:
        if sock is not None:
            sock.close()
        if error.errno != errno.EADDRINUSE:
            raise
        raise PortInUse(host, port, setting) from None
