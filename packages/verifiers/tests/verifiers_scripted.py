"""A stand-in for the inference server at its process boundary: replies are scripted, everything else real.

`ScriptedClient.generate` answers with the text a script chooses for the request, tokenized by the real
tokenizer and closed with `<|im_end|>` (cut to `max_tokens`, with finish_reason "length", like a server).
It records every request so tests can check exactly what an environment sent over the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from foveal.renderers.inference.wire import Completion, GenerateRequest, GenerateResponse
from foveal.renderers.rendering import Renderer

Script = Callable[[GenerateRequest, str | None], str]
LOGPROB = -0.25


class ScriptedClient:
    def __init__(self, renderer: Renderer, script: Script, *, delay_s: float = 0.0, weight_version: int = 3) -> None:
        self.renderer = renderer
        self.script = script
        self.delay_s = delay_s
        self.weight_version = weight_version
        self.requests: list[tuple[GenerateRequest, str | None]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def generate(self, request: GenerateRequest, session_id: str | None = None) -> GenerateResponse:
        self.requests.append((request, session_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            text = self.script(request, session_id)
        finally:
            self.in_flight -= 1
        ids = [*self.renderer.tokenizer(text, add_special_tokens=False)["input_ids"], self.renderer.stop_token_ids[0]]
        limit = request.sampling.max_tokens
        finish = "length" if len(ids) > limit else "stop"
        ids = ids[:limit]
        completion = Completion(
            token_ids=tuple(ids),
            logprobs=tuple(LOGPROB for _ in ids),
            finish_reason=finish,
            text=self.renderer.tokenizer.decode(ids),
        )
        return GenerateResponse(
            request_id=f"r{len(self.requests)}",
            model="scripted",
            weight_version=self.weight_version,
            prompt_tokens=len(request.prompt_token_ids),
            completions=(completion,),
        )


def replies(*texts: str) -> Script:
    """A script answering the i-th request with texts[i] (the last one repeats)."""
    calls = iter(range(10**6))
    return lambda request, session: texts[min(next(calls), len(texts) - 1)]
