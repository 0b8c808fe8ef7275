"""Bearer-token checks: constant-time comparison, and the token never appears in a log or an answer."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from foveal.trainer.serving.errors import RequestError

_SCHEME = "bearer "


def bearer_guard(token: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that requires `Authorization: Bearer <token>`; `None` lets every request in."""
    expected = None if token is None else token.encode()

    def require(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        given = header[len(_SCHEME) :].strip().encode() if header[: len(_SCHEME)].lower() == _SCHEME else b""
        if not hmac.compare_digest(given, expected):
            raise RequestError("unauthorized", 401, "a valid bearer token is required", "Authorization")

    return require
