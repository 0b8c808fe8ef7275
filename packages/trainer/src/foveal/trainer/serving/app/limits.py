"""The gate every HTTP request passes before any route: credential first, then a body cap per route.

An unauthenticated request is answered 401 from its headers alone, before one byte of its body is read, so a
client without the token can neither make the server hold memory nor learn anything from a parse error. A
refused request that announced more than DRAIN_LIMIT_BYTES also loses its connection, so the server does not
read (and drop) a huge upload either; a smaller one is drained, so the client surely reads its answer (closing
on unread data makes the kernel reset the connection, and a reset can overtake the answer). A
request that passes gets the body cap of its route (`RouteRule`: control calls and tokenization are small,
generation as configured): a body announced larger is refused 413 at once, and one found larger while it
streams is refused as soon as it passes the cap, so an upload costs at most its route's cap in memory. The
accepted body is replayed to the app.

The routes keep their own credential checks (FastAPI dependencies) as a second line; the gate only answers
earlier and cheaper.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foveal.trainer.serving.app.errors import error_response

CONTROL_BODY_BYTES = 64 * 2**10
"""Control calls carry a mode, a path and a version: far below this."""
SMALL_BODY_BYTES = 2**20
"""Tokenization, detokenization and the Tinker bookkeeping calls."""
NO_BODY_BYTES = 4 * 2**10
"""GET routes and unknown paths: nothing to read."""
DRAIN_LIMIT_BYTES = 16 * 2**20
"""A refused request announcing a larger body loses its connection instead of having the body read and dropped."""


@dataclass(frozen=True)
class Credential:
    """A secret sent in `header`, after `scheme` (case-insensitive: "bearer ") when one is set."""

    header: str
    secret: str
    scheme: str = ""
    field: str = ""
    """The field a 401 names (the header as clients spell it)."""

    def accepts(self, headers: dict[bytes, bytes]) -> bool:
        sent = headers.get(self.header.lower().encode(), b"")
        prefix = self.scheme.encode()
        if prefix and sent[: len(prefix)].lower() != prefix.lower():
            return False
        return hmac.compare_digest(sent[len(prefix) :].strip(), self.secret.encode())

    def refusal(self) -> str:
        return f"a valid {'bearer token' if self.scheme else 'API key'} is required in {self.field or self.header}"


def bearer(token: str | None) -> Credential | None:
    """`Authorization: Bearer <token>`, or no credential when no token is configured."""
    return None if token is None else Credential("authorization", token, "bearer ", "Authorization")


@dataclass(frozen=True)
class RouteRule:
    """Requests whose path is `path` (or under it, when it ends with "/") need `credential` and a body of at most
    `max_bytes`."""

    path: str
    max_bytes: int
    credential: Credential | None = None

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.path.endswith("/") else path == self.path


class RequestGate:
    """ASGI middleware applying the first matching `RouteRule` (or `default`) to each HTTP request; a body not
    received within `body_timeout_s` of its headers gets 408."""

    def __init__(
        self, app: ASGIApp, rules: Sequence[RouteRule], default: RouteRule, body_timeout_s: float = 60.0
    ) -> None:
        self.app = app
        self.rules = tuple(rules)
        self.default = default
        self.body_timeout_s = body_timeout_s

    def rule_for(self, path: str) -> RouteRule:
        return next((rule for rule in self.rules if rule.matches(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        rule = self.rule_for(path)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        huge = declared is not None and (not declared.isdigit() or int(declared) > DRAIN_LIMIT_BYTES)
        if rule.credential is not None and not rule.credential.accepts(headers):
            refusal = error_response("unauthorized", 401, rule.credential.refusal(), rule.credential.field, path=path)
            await _closing(refusal, huge)(scope, receive, send)
            return
        if declared is not None and (not declared.isdigit() or int(declared) > rule.max_bytes):
            await _closing(_too_long(rule.max_bytes, path), huge)(scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(_read(receive, rule.max_bytes), self.body_timeout_s)
        except TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await _closing(error_response("timeout", 408, message, "body", path=path), True)(scope, receive, send)
            return
        if body is None:  # disconnected: nobody to answer
            return
        if isinstance(body, int):
            await _closing(_too_long(rule.max_bytes, path), True)(scope, receive, send)  # undeclared: may never end
            return
        await self.app(scope, _replay(body, receive), send)


async def _read(receive: Receive, max_bytes: int) -> bytes | int | None:
    """The whole body; its size so far once it passes `max_bytes`; None if the client went away."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return size
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _too_long(max_bytes: int, path: str) -> JSONResponse:
    return error_response("too_long", 413, f"request bodies are limited to {max_bytes} bytes", "body", path=path)


def _closing(refusal: JSONResponse, close: bool) -> JSONResponse:
    """The refusal, ending the connection when `close` (the server then reads none of the rest of the body)."""
    if close:
        refusal.headers["Connection"] = "close"
    return refusal


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: disconnect notifications
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
