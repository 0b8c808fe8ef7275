"""A stand-in OpenAI-compatible endpoint: a real HTTP server on 127.0.0.1 (OS-chosen port), scripted answers.

`Endpoint.answers` is a queue of (status, JSON body) pairs, or `answer` a function of the request body;
every request is recorded with its headers. Standard library only, so it runs with foveal-verifiers alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, Any]]


class Endpoint:
    """A /v1/chat/completions server that answers with queued (status, body) pairs and records requests."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.answer: Callable[[dict[str, Any]], Answer] | None = None
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append((dict(self.headers), body | {"_path": self.path}))
                status, answer = endpoint.answer(body) if endpoint.answer else endpoint.answers.pop(0)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def running_endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()
        thread.join(10)


def completion(message: dict[str, Any], finish: str = "stop", total: int = 100) -> dict[str, Any]:
    """A chat completion body with one choice."""
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": total - 5, "completion_tokens": 5, "total_tokens": total},
    }  # fmt: skip
