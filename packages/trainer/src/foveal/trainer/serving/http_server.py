"""uvicorn as every Foveal HTTP process runs it: slow clients cut off, connections capped (`[*.http]`).

uvicorn closes idle kept-alive connections (`timeout_keep_alive`) and answers 503 past `limit_concurrency`, but it
has no deadline for a request's headers: a client that opens a connection and sends half a header line holds it
forever, and enough of them exhaust the process. `HeaderDeadlineProtocol` is uvicorn's h11 protocol with that
deadline: whenever the connection waits for a request's headers (a fresh connection, or bytes of the next request
on a kept-alive one), they must be complete within `header_timeout_s`, or the connection is closed. The body's
own deadline is `RequestGate`'s (`body_timeout_s`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from foveal.configs.http import HttpLimits


class HeaderDeadlineProtocol(H11Protocol):
    """h11 protocol closing connections whose request headers take longer than `header_timeout_s`."""

    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a fresh connection owes its first request's headers

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # bytes came, but not yet a whole request line and headers
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def uvicorn_config(app: Any, limits: HttpLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn config for `app` with the header deadline, keep-alive timeout and connection cap of `limits`."""
    protocol = type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout_s": limits.header_timeout_s})
    return uvicorn.Config(
        app, http=protocol, timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections, **options
    )
