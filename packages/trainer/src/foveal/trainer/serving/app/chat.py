"""`/v1/chat/completions`: OpenAI-shaped chat over the token-in/token-out path.

Messages are rendered by the server's own renderer (images stored and laid out under the server's
`[multimodal]` rules), the rendered images travel as `mmraw:` refs through the same checks as any
`/v1/generate` request, and each completion is parsed back by the renderer (content, reasoning, tool
calls). Logprobs, when asked for, are the raw-model logprobs of the sampled tokens, as on `/v1/generate`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.openai import (
    AssistantReply,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatToolCall,
    ChoiceLogprobs,
    FunctionCall,
    TokenLogprob,
    Usage,
)
from foveal.renderers.inference.wire import Completion, Endpoints, GenerateRequest, SamplingParams
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.serving.backends.base import InferenceBackend
from foveal.trainer.serving.errors import RequestError, invalid, too_long


def chat_routes(backend: InferenceBackend, guard: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)])

    @router.post(Endpoints.CHAT_COMPLETIONS, response_model_exclude_none=True)
    async def chat_completions(request: ChatCompletionRequest) -> ChatCompletionResponse:
        info = backend.info()
        if request.model not in info.model_names():
            names = ", ".join(repr(name) for name in info.model_names())
            raise RequestError("not_found", 404, f"model: this server serves {names} (GET /v1/models)", "model")
        rendered = await asyncio.to_thread(_render, backend.renderer, request)
        generate = GenerateRequest(
            prompt_token_ids=rendered.token_ids,
            image_refs=tuple(encode_mmraw(image.descriptor) for image in rendered.images),
            sampling=_sampling(request, len(rendered.token_ids), info.max_model_len),
        )
        answer = await backend.generate(generate)
        choices = tuple(_choice(i, c, backend.renderer, request) for i, c in enumerate(answer.completions))
        completion_tokens = sum(len(c.token_ids) for c in answer.completions)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=answer.model,
            choices=choices,
            usage=Usage(
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=answer.prompt_tokens + completion_tokens,
            ),
            prompt_token_ids=rendered.token_ids if request.return_token_ids else None,
            weight_version=answer.weight_version,
        )

    return router


def _render(renderer: Renderer, request: ChatCompletionRequest) -> RenderedConversation:
    messages = [message.model_dump(exclude_none=True) for message in request.messages]
    return renderer.render(messages, request.tools, add_generation_prompt=True)


def _sampling(request: ChatCompletionRequest, prompt_tokens: int, max_model_len: int) -> SamplingParams:
    """The request's sampling settings; without a token budget, the rest of the context."""
    if prompt_tokens >= max_model_len:
        raise too_long("messages", f"the rendered prompt has {prompt_tokens} tokens; the limit is {max_model_len}")
    max_tokens = request.max_completion_tokens or request.max_tokens or max_model_len - prompt_tokens
    try:
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            max_tokens=max_tokens,
            stop=request.stop_strings(),
            seed=request.seed,
            n=request.n,
            logprobs=True,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise invalid(".".join(str(part) for part in first["loc"]), first["msg"]) from None


def _choice(index: int, completion: Completion, renderer: Renderer, request: ChatCompletionRequest) -> ChatChoice:
    message = renderer.parse_completion(completion.token_ids)
    calls = tuple(
        ChatToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}",
            function=FunctionCall(name=call.name, arguments=_arguments_text(call.arguments)),
        )
        for call in message.tool_calls
    )
    reply = AssistantReply(
        content=message.text(), reasoning_content=message.reasoning_content, tool_calls=calls or None
    )
    finish = "tool_calls" if calls and completion.finish_reason == "stop" else completion.finish_reason
    return ChatChoice(
        index=index,
        message=reply,
        finish_reason=finish,
        logprobs=_logprobs(completion, renderer) if request.logprobs else None,
        token_ids=completion.token_ids if request.return_token_ids else None,
    )


def _arguments_text(arguments: dict[str, object] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _logprobs(completion: Completion, renderer: Renderer) -> ChoiceLogprobs:
    tokens = []
    for token_id, logprob in zip(completion.token_ids, completion.logprobs or (), strict=True):
        text = renderer.tokenizer.decode([token_id], skip_special_tokens=False)
        tokens.append(TokenLogprob(token=text, logprob=logprob, bytes=tuple(text.encode("utf-8"))))
    return ChoiceLogprobs(content=tuple(tokens))
