"""`/v1/chat/completions`: OpenAI-shaped chat over the token-in/token-out path.

Messages are rendered by the server's own renderer (images stored and laid out under the server's
`[multimodal]` rules), the rendered images travel as `mmraw:` refs through the same checks as any
`/v1/generate` request, and each completion is parsed back by the renderer (content, reasoning, tool
calls). Logprobs, when asked for, are the raw-model logprobs of the sampled tokens, as on `/v1/generate`, with
each position's `top_logprobs` most likely tokens of the same distribution.
With `stream: true` the answer is server-sent `chat.completion.chunk` events (`chat_stream`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.openai import (
    AssistantReply,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from foveal.renderers.inference.wire import Completion, Endpoints, GenerateRequest
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.serving.app.chat_stream import chat_chunks
from foveal.trainer.serving.app.openai_common import (
    AnswerHead,
    ReportedTokens,
    chat_finish_reason,
    check_model,
    sampling_params,
    token_logprobs,
    tool_calls,
    usage,
)
from foveal.trainer.serving.app.streaming import event_stream, token_events
from foveal.trainer.serving.backends.base import InferenceBackend


def chat_routes(backend: InferenceBackend, guard: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)])

    @router.post(Endpoints.CHAT_COMPLETIONS, response_model=None)
    async def chat_completions(request: ChatCompletionRequest) -> Response:
        info = backend.info()
        check_model(request, info)
        rendered = await asyncio.to_thread(_render, backend.renderer, request)
        max_tokens = request.max_completion_tokens or request.max_tokens
        generate = GenerateRequest(
            prompt_token_ids=rendered.token_ids,
            image_refs=tuple(encode_mmraw(image.descriptor) for image in rendered.images),
            sampling=sampling_params(request, max_tokens, len(rendered.token_ids), info.max_model_len, "messages"),
        )
        head = AnswerHead.new("chatcmpl", info.model)
        if request.stream:
            events = await token_events(backend, generate)
            return event_stream(chat_chunks(events, head, request, backend.renderer, len(rendered.token_ids)))
        answer = await backend.generate(generate)
        completion_tokens = sum(len(c.token_ids) for c in answer.completions)
        response = ChatCompletionResponse(
            id=head.id,
            created=head.created,
            model=answer.model,
            choices=tuple(_choice(i, c, backend.renderer, request) for i, c in enumerate(answer.completions)),
            usage=usage(answer.prompt_tokens, completion_tokens),
            prompt_token_ids=rendered.token_ids if request.return_token_ids else None,
            weight_version=answer.weight_version,
        )
        return JSONResponse(response.model_dump(mode="json", exclude_none=True))

    return router


def _render(renderer: Renderer, request: ChatCompletionRequest) -> RenderedConversation:
    messages = [_decoded_arguments(message.model_dump(exclude_none=True)) for message in request.messages]
    return renderer.render(messages, request.tools, add_generation_prompt=True)


def _decoded_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sends a call's arguments as JSON text; templates are written for the object (as vLLM passes it):
    Llama 3's `tojson` would quote the text. Text that is not a JSON object stays text, for the template to write."""
    for call in message.get("tool_calls", ()):
        try:
            arguments = json.loads(call["function"]["arguments"])
        except json.JSONDecodeError:
            continue
        if isinstance(arguments, dict):
            call["function"]["arguments"] = arguments
    return message


def _choice(index: int, completion: Completion, renderer: Renderer, request: ChatCompletionRequest) -> ChatChoice:
    message = renderer.parse_completion(completion.token_ids)
    calls = tool_calls(message)
    reply = AssistantReply(
        content=message.text(), reasoning_content=message.reasoning_content, tool_calls=calls or None
    )
    tokens = ReportedTokens.of_completion(completion)
    return ChatChoice(
        index=index,
        message=reply,
        finish_reason=chat_finish_reason(calls, completion.finish_reason),
        logprobs=token_logprobs(tokens, renderer) if request.logprobs else None,
        token_ids=completion.token_ids if request.return_token_ids else None,
    )
