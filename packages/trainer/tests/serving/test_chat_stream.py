"""A streamed chat reply with a tool call, token by token: chunks the `openai` client's types accept, content
deltas that add up to the whole answer's content, and the call whole in the last chunk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from openai.types.chat import ChatCompletionChunk as OpenAIChunk

from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import ChatCompletionRequest
from foveal.renderers.inference.wire import Completion
from foveal.renderers.tiny import build_tiny_processor
from foveal.trainer.serving.app.chat import _choice
from foveal.trainer.serving.app.chat_stream import chat_chunks
from foveal.trainer.serving.app.openai_common import AnswerHead
from foveal.trainer.serving.engine.requests import TokenEvent, TokenStream


async def _events(ids: tuple[int, ...]) -> TokenStream:
    for position, token_id in enumerate(ids):
        yield TokenEvent(0, token_id, -0.5, "stop" if position == len(ids) - 1 else None)


def test_a_streamed_tool_call_arrives_whole_after_the_streamed_content(tiny_cache_root: Path) -> None:
    renderer = load_renderer(build_tiny_processor("qwen3_vl", tiny_cache_root))
    text = 'Zooming in é\n<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call><|im_end|>'
    ids = tuple(renderer.tokenizer.encode(text, add_special_tokens=False))
    messages = [{"role": "user", "content": "zoom"}]
    request = ChatCompletionRequest(model="m", messages=messages, stream=True, logprobs=True)

    async def collect() -> list[OpenAIChunk]:
        chunks = chat_chunks(_events(ids), AnswerHead.new("chatcmpl", "m"), request, renderer, 7)
        return [OpenAIChunk.model_validate(chunk.model_dump(mode="json", exclude_none=True)) async for chunk in chunks]

    chunks = asyncio.run(collect())
    whole = _choice(0, Completion(token_ids=ids, logprobs=(-0.5,) * len(ids), finish_reason="stop", text=text),
                    renderer, request)  # fmt: skip
    deltas = [chunk.choices[0].delta for chunk in chunks]
    assert deltas[0].role == "assistant"
    assert "".join(delta.content or "" for delta in deltas) == whole.message.content == "Zooming in é"
    assert len([delta for delta in deltas[1:-1] if delta.content]) > 1  # the content streamed before the end
    calls = chunks[-1].choices[0].delta.tool_calls or []
    assert [(c.index, c.function.name, json.loads(c.function.arguments or "")) for c in calls if c.function] == [
        (0, "zoom", {"factor": 2})
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert sum(len(chunk.choices[0].logprobs.content or []) for chunk in chunks[1:]) == len(ids)  # type: ignore[union-attr]
