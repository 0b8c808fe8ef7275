"""`RequestGate`: the credential is checked from the headers before any body byte is read, then the route's cap.

The app behind the gate and the client's body stream are real ASGI callables that record what was touched, so
each test can tell whether the gate read the body or let the request through.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from foveal.trainer.serving.app.limits import Credential, RequestGate, RouteRule, bearer

TOKEN = "s3cret-token"
RULES = [RouteRule("/control/", 64, bearer(TOKEN)), RouteRule("/v1/tokenize", 32), RouteRule("/v1/", 1024)]
DEFAULT = RouteRule("/", 0)


class Exchange:
    """One request through the gate: the body chunks the client offers, what the app saw, what came back."""

    def __init__(self, path: str, headers: dict[str, str], chunks: list[bytes]) -> None:
        self.scope = {
            "type": "http", "method": "POST", "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }  # fmt: skip
        self.chunks, self.read = list(chunks), 0
        self.app_body: bytes | None = None
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.read += 1
        chunk = self.chunks.pop(0) if self.chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.app_body = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def run(self) -> tuple[int, dict[str, Any] | None]:
        asyncio.run(RequestGate(self.app, RULES, DEFAULT)(self.scope, self.receive, self.send))
        status = self.sent[0]["status"]
        body = self.sent[1]["body"]
        return status, (orjson.loads(body) if status != 200 else None)


def test_no_token_is_401_from_the_headers_alone_however_large_the_body() -> None:
    wrong = ({"Content-Length": str(60 * 2**20)}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN})
    for headers in wrong:
        exchange = Exchange("/control/pause", headers, [b"{not json" * 1000])
        status, body = exchange.run()
        assert status == 401 and body["error"]["field"] == "Authorization"
        assert exchange.read == 0 and exchange.app_body is None
        assert TOKEN not in str(body)


def test_an_authorized_body_over_the_routes_cap_is_413_without_reading_past_it() -> None:
    auth = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    declared = Exchange("/control/pause", {**auth, "Content-Length": "65"}, [b"x" * 65])
    assert declared.run()[0] == 413 and declared.read == 0
    streamed = Exchange("/control/pause", auth, [b"x" * 40] * 10)  # no Content-Length: counted while streaming
    status, body = streamed.run()
    assert status == 413 and body["error"] == {
        "code": "too_long", "message": "request bodies are limited to 64 bytes", "field": "body"
    }  # fmt: skip
    assert streamed.read == 2 and streamed.app_body is None
    fits = Exchange("/control/pause", auth, [b'{"mode": ', b'"abort"}'])
    assert fits.run() == (200, None) and fits.app_body == b'{"mode": "abort"}'


def test_the_first_matching_rule_wins_and_unknown_paths_get_the_default() -> None:
    assert Exchange("/v1/tokenize", {"Content-Length": "33"}, [b"x" * 33]).run()[0] == 413
    assert Exchange("/v1/generate", {"Content-Length": "33"}, [b"x" * 33]).run()[0] == 200
    assert Exchange("/v1/tokenize/more", {"Content-Length": "33"}, [b"x" * 33]).run()[0] == 200  # exact, not prefix
    assert Exchange("/elsewhere", {"Content-Length": "1"}, [b"x"]).run()[0] == 413
    assert Exchange("/v1/generate", {"Content-Length": "-1"}, [b""]).run()[0] == 413


def test_an_api_key_credential_has_no_scheme() -> None:
    key = Credential("x-api-key", "k", field="X-API-Key")
    assert key.accepts({b"x-api-key": b"k"}) and not key.accepts({b"x-api-key": b"Bearer k"})
    assert not key.accepts({}) and "X-API-Key" in key.refusal()
    assert bearer(None) is None
