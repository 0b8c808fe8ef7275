"""What `/v1/chat/completions` and `/v1/completions` share: the model check, the sampling settings, and the
pieces of an answer (ids, logprobs, tool calls) whether it is sent whole or streamed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from foveal.renderers.inference.openai import (
    ChatToolCall,
    ChoiceLogprobs,
    FunctionCall,
    SamplingRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from foveal.renderers.inference.wire import Alternative, Completion, SamplingParams, ServerInfo
from foveal.renderers.messages import AssistantMessage, ToolCall
from foveal.renderers.rendering import Renderer
from foveal.trainer.serving.engine.requests import TokenEvent
from foveal.trainer.serving.errors import RequestError, invalid, too_long


@dataclass(frozen=True)
class ReportedTokens:
    """Sampled tokens as an answer reports them: ids, raw logprobs, and each one's alternatives (`()` if not asked)."""

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    alternatives: tuple[tuple[Alternative, ...], ...]

    @classmethod
    def of_completion(cls, completion: Completion) -> ReportedTokens:
        ids = completion.token_ids
        return cls(ids, completion.logprobs or (), completion.top_logprobs or ((),) * len(ids))

    @classmethod
    def of_events(cls, events: Sequence[TokenEvent]) -> ReportedTokens:
        ids = tuple(event.token_id for event in events)
        return cls(ids, tuple(e.logprob for e in events), tuple(e.top_logprobs for e in events))


@dataclass(frozen=True)
class AnswerHead:
    """The fields every chunk of one answer repeats."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def new(cls, prefix: str, model: str) -> AnswerHead:
        return cls(f"{prefix}-{uuid.uuid4().hex}", model)


def check_model(request: SamplingRequest, info: ServerInfo) -> None:
    """A 404 naming the served names when `model` is none of them (OpenAI's `model_not_found`)."""
    if request.model not in info.model_names():
        names = ", ".join(repr(name) for name in info.model_names())
        raise RequestError("not_found", 404, f"model: {request.model!r} is not served here; {names} are", "model")


def sampling_params(
    request: SamplingRequest, max_tokens: int | None, prompt_tokens: int, max_model_len: int, field: str
) -> SamplingParams:
    """The request's sampling settings (logprobs always kept, for RL); without a budget, the rest of the context."""
    if prompt_tokens >= max_model_len:
        raise too_long(field, f"the prompt has {prompt_tokens} tokens; the limit is {max_model_len}")
    try:
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            max_tokens=max_tokens or max_model_len - prompt_tokens,
            stop=request.stop_strings(),
            seed=request.seed,
            n=request.n,
            logprobs=True,
            top_logprobs=request.alternatives(),
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise invalid(".".join(str(part) for part in first["loc"]), first["msg"]) from None


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def token_logprobs(tokens: ReportedTokens, renderer: Renderer) -> ChoiceLogprobs:
    """Chat logprobs of sampled tokens: each token's own text (special tokens kept), its bytes, its alternatives."""
    content = []
    for token_id, logprob, alternatives in zip(tokens.ids, tokens.logprobs, tokens.alternatives, strict=True):
        text = token_text(renderer, token_id)
        top = tuple(_top_logprob(renderer, *alternative) for alternative in alternatives)
        content.append(TokenLogprob(token=text, logprob=logprob, bytes=tuple(text.encode("utf-8")), top_logprobs=top))
    return ChoiceLogprobs(content=tuple(content))


def token_text(renderer: Renderer, token_id: int) -> str:
    """One token's own text, special tokens kept (as OpenAI reports a token)."""
    return renderer.tokenizer.decode([token_id], skip_special_tokens=False)


def _top_logprob(renderer: Renderer, token_id: int, logprob: float) -> TopLogprob:
    text = token_text(renderer, token_id)
    return TopLogprob(token=text, logprob=logprob, bytes=tuple(text.encode("utf-8")))


def tool_calls(message: AssistantMessage) -> tuple[ChatToolCall, ...]:
    """The parsed calls of a reply, as OpenAI tool calls with fresh ids and JSON-text arguments."""
    return tuple(
        ChatToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=call.name, arguments=_text(call)))
        for call in message.tool_calls
    )


def chat_finish_reason(calls: Sequence[ChatToolCall], finish_reason: str) -> str:
    """OpenAI's `tool_calls` when the reply stopped after calling tools."""
    return "tool_calls" if calls and finish_reason == "stop" else finish_reason


def _text(call: ToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments, ensure_ascii=False)
