"""`stream: true`: a backend's tokens as they are sampled, sent as OpenAI's server-sent events.

The transformers backend hands over each token as the engine samples it (`StreamingBackend`). A backend
without `stream` (vLLM here) answers whole, and its finished completions are then sent as events after the
fact: same chunks, no earlier first byte. A route waits for the first token before it answers, so a
request that fails before sampling anything (bad input, queue full, aborted by a pause) gets a plain JSON
error, which the router may retry; a failure after that is one error event (`ErrorResponse`), and the
stream ends without `[DONE]`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from foveal.renderers.inference.openai import openai_error
from foveal.renderers.inference.wire import GenerateRequest, GenerateResponse
from foveal.trainer.serving.backends.base import InferenceBackend, StreamingBackend
from foveal.trainer.serving.engine.requests import EngineError, TokenEvent, TokenStream

log = logging.getLogger(__name__)
EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"


async def token_events(backend: InferenceBackend, request: GenerateRequest) -> TokenStream:
    """The request's tokens in sampling order, once the first one exists (or the request has failed)."""
    if isinstance(backend, StreamingBackend):
        events = await backend.stream(request)
    else:
        events = _replayed(await backend.generate(request))
    first = await anext(events)
    return _after(first, events)


def event_stream(chunks: AsyncGenerator[BaseModel, None]) -> StreamingResponse:
    """Each chunk as one `data:` event (no proxy buffering), then `data: [DONE]`."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(chunks), media_type=EVENT_STREAM, headers=headers)


def sse(model: BaseModel) -> bytes:
    return b"data: " + model.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def _events(chunks: AsyncGenerator[BaseModel, None]) -> AsyncGenerator[bytes, None]:
    try:
        async with aclosing(chunks):  # a client that went away ends the request behind the chunks at once
            async for chunk in chunks:
                yield sse(chunk)
    except EngineError as error:  # aborted, unavailable, engine failure: the client's error, in OpenAI's shape
        yield sse(openai_error(error.http_status, error.code, str(error) or error.code))
        return
    except Exception as error:  # a bug: logged here, the client gets a 500-like event instead of a cut stream
        log.exception("a streamed answer failed after its first event")
        yield sse(openai_error(500, "internal", f"internal error ({type(error).__name__})"))
        return
    yield DONE


async def _after(first: TokenEvent, rest: TokenStream) -> TokenStream:
    async with aclosing(rest):
        yield first
        async for event in rest:
            yield event


async def _replayed(response: GenerateResponse) -> TokenStream:
    """A whole answer as the events a streaming backend would have sent (the routes always ask for logprobs)."""
    for index, completion in enumerate(response.completions):
        assert completion.logprobs is not None, "the OpenAI routes always sample with logprobs"
        last = len(completion.token_ids) - 1
        top = completion.top_logprobs or ((),) * len(completion.token_ids)
        tokens = zip(completion.token_ids, completion.logprobs, top, strict=True)
        for position, (token_id, logprob, alternatives) in enumerate(tokens):
            finish = completion.finish_reason if position == last else None
            yield TokenEvent(index, token_id, logprob, finish, alternatives)
