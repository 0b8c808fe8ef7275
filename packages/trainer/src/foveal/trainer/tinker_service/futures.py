"""The futures table: every accepted request gets an id at once, its result is fetched with retrieve_future.

Tinker clients submit work, receive `{"request_id": ...}` and poll `/api/v1/retrieve_future`. A result is a
`Payload`: protobuf bytes (forward_backward and sample results, which the SDK reads only as protobuf), a
JSON answer, or a failure. Polling long-waits up to `wait_s` for a pending result and then answers
"try again", so a client polls a few times a minute rather than in a tight loop. Finished entries are kept
(a client may poll again after a lost response) up to `max_finished`, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

from pydantic import BaseModel

from foveal.renderers.errors import ContractError
from foveal.trainer.serving.errors import RequestError


@dataclass(frozen=True)
class Payload:
    """A finished request: exactly one of protobuf bytes, a JSON answer, or an error message."""

    proto: bytes | None = None
    json: BaseModel | None = None
    error: str | None = None
    user_error: bool = False


def failed(error: BaseException) -> Payload:
    """A failure payload; request and contract errors are the user's, anything else the server's."""
    user = isinstance(error, RequestError | ContractError)
    return Payload(error=str(error) if user else f"internal error ({type(error).__name__})", user_error=user)


class FuturesTable:
    """Request id -> concurrent Future of a Payload; thread-safe (results arrive from worker threads)."""

    def __init__(self, max_finished: int = 4096) -> None:
        self.max_finished = max_finished
        self._futures: OrderedDict[str, Future[Payload]] = OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> tuple[str, Future[Payload]]:
        request_id = uuid.uuid4().hex
        future: Future[Payload] = Future()
        with self._lock:
            self._futures[request_id] = future
            self._trim()
        return request_id, future

    async def wait(self, request_id: str, wait_s: float) -> Payload | None:
        """The payload, or None if still pending after `wait_s`; an unknown id is a 404 naming `request_id`."""
        with self._lock:
            future = self._futures.get(request_id)
        if future is None:
            raise RequestError("not_found", 404, f"request_id: no request {request_id!r}", "request_id")
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait_s)
        except TimeoutError:
            return None

    def _trim(self) -> None:
        finished = [key for key, future in self._futures.items() if future.done()]
        for key in finished[: max(0, len(finished) - self.max_finished)]:
            del self._futures[key]
