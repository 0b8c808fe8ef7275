"""`/v1/completions`: OpenAI's text completions over the token-in/token-out path (no chat template).

The prompt is text (tokenized without special tokens) or token ids; images are not taken here. A completion's
`text` is its sampled tokens decoded (special tokens kept) without the stop token that ended it and cut before
the first stop string, as OpenAI returns it; `token_ids` and logprobs (`logprobs: 0`) still cover every
sampled token, for RL. `logprobs: N` adds OpenAI's legacy `top_logprobs`: per token, a {text: logprob} of its
position's N most likely tokens under the raw model distribution. With `stream: true` the answer is
server-sent `text_completion` chunks, each choice's text settled token by token (`deltas`), then `[DONE]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from foveal.renderers.inference.openai import (
    COMPLETIONS_PATH,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from foveal.renderers.inference.wire import Alternative, GenerateRequest, TokenizeRequest
from foveal.trainer.serving.app.deltas import IncrementalDecoder, SentText, completion_text, settled_completion_text
from foveal.trainer.serving.app.openai_common import AnswerHead, ReportedTokens, check_model, sampling_params, usage
from foveal.trainer.serving.app.streaming import event_stream, token_events
from foveal.trainer.serving.backends.base import InferenceBackend
from foveal.trainer.serving.engine.requests import TokenEvent, TokenStream

Decode = Callable[[list[int]], str]


def completion_routes(backend: InferenceBackend, guard: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)])

    def decode(token_ids: list[int]) -> str:
        return backend.renderer.tokenizer.decode(token_ids, skip_special_tokens=False)

    @router.post(COMPLETIONS_PATH, response_model=None)
    async def completions(request: CompletionRequest) -> Response:
        info = backend.info()
        check_model(request, info)
        prompt = await _prompt_ids(backend, request)
        sampling = sampling_params(request, request.max_tokens, len(prompt), info.max_model_len, "prompt")
        generate = GenerateRequest(prompt_token_ids=prompt, sampling=sampling)
        head = AnswerHead.new("cmpl", info.model)
        texts = TextRule(decode, frozenset(info.stop_token_ids), request.stop_strings())
        if request.stream:
            events = await token_events(backend, generate)
            return event_stream(completion_chunks(events, head, request, texts, len(prompt)))
        answer = await backend.generate(generate)
        choices = tuple(
            _choice(i, ReportedTokens.of_completion(c), c.finish_reason, texts, request)
            for i, c in enumerate(answer.completions)
        )
        response = CompletionResponse(
            id=head.id,
            created=head.created,
            model=answer.model,
            choices=choices,
            usage=usage(answer.prompt_tokens, sum(len(c.token_ids) for c in answer.completions)),
            prompt_token_ids=prompt if request.return_token_ids else None,
            weight_version=answer.weight_version,
        )
        return JSONResponse(response.model_dump(mode="json", exclude_none=True))

    return router


class TextRule:
    """How sampled ids become a completion's text: decoded, the ending stop token left out, cut at a stop string."""

    def __init__(self, decode: Decode, stop_ids: frozenset[int], stops: tuple[str, ...]) -> None:
        self.decode = decode
        self.stop_ids = stop_ids
        self.stops = stops

    def text(self, token_ids: Sequence[int]) -> str:
        ids = list(token_ids)
        if ids and ids[-1] in self.stop_ids:
            ids.pop()
        return completion_text(self.decode(ids), self.stops)


async def completion_chunks(
    events: TokenStream, head: AnswerHead, request: CompletionRequest, texts: TextRule, prompt_tokens: int
) -> AsyncGenerator[CompletionResponse, None]:
    """The chunks of one streamed text completion: text deltas per choice, its finish reason on its last."""
    choices = [TextChoiceStream(index, texts, request) for index in range(request.n)]
    sampled = 0
    async with aclosing(events):
        async for event in events:
            sampled += 1
            if (choice := choices[event.index].push(event)) is not None:
                yield _chunk(head, (choice,))
    if request.include_usage():
        yield _chunk(head, (), usage(prompt_tokens, sampled))


class TextChoiceStream:
    """One choice being streamed: its tokens, the text sent, and the tokens not yet reported."""

    def __init__(self, index: int, texts: TextRule, request: CompletionRequest) -> None:
        self.index = index
        self.texts = texts
        self.request = request
        self.reports_tokens = request.logprobs is not None or request.return_token_ids
        self.decoder = IncrementalDecoder(texts.decode)
        self.sent = SentText()
        self.token_ids: list[int] = []
        self.unreported: list[TokenEvent] = []
        self.reported_chars = 0
        """Characters of the reported tokens' texts: where the next token's `text_offset` starts."""

    def push(self, event: TokenEvent) -> CompletionChoice | None:
        """The chunk choice this token makes (None when it settles no text and no token is reported)."""
        self.token_ids.append(event.token_id)
        self.unreported.append(event)
        if event.finish_reason is None:
            if event.token_id not in self.texts.stop_ids:
                self.decoder.push(event.token_id)
            delta = self.sent.advance(settled_completion_text(self.decoder.text, self.texts.stops))
        else:
            delta = self.sent.advance(self.texts.text(self.token_ids))
        if not delta and event.finish_reason is None and not self.reports_tokens:
            return None
        tokens = ReportedTokens.of_events(self.unreported)
        self.unreported = []
        finish = event.finish_reason
        choice = _choice(self.index, tokens, finish, self.texts, self.request, delta, self.reported_chars)
        if choice.logprobs is not None:
            self.reported_chars += sum(len(token) for token in choice.logprobs.tokens)
        return choice


def _choice(
    index: int,
    tokens: ReportedTokens,
    finish_reason: str | None,
    texts: TextRule,
    request: CompletionRequest,
    text: str | None = None,
    offset: int = 0,
) -> CompletionChoice:
    """A choice of `tokens`; its text is theirs unless given (a stream's delta, its tokens' texts from `offset`)."""
    reported = None if request.logprobs is None else _logprobs(tokens, texts.decode, offset, request.logprobs > 0)
    return CompletionChoice(
        index=index,
        text=texts.text(tokens.ids) if text is None else text,
        finish_reason=finish_reason,
        logprobs=reported,
        token_ids=tokens.ids if request.return_token_ids else None,
    )


def _logprobs(tokens: ReportedTokens, decode: Decode, start: int, with_top: bool) -> CompletionLogprobs:
    """OpenAI's legacy logprobs: each token's text, its logprob, where it starts (the tokens' texts joined), and
    with `with_top` its position's most likely tokens."""
    texts = [decode([token_id]) for token_id in tokens.ids]
    offsets = [start + sum(len(text) for text in texts[:i]) for i in range(len(texts))]
    return CompletionLogprobs(
        tokens=tuple(texts),
        token_logprobs=tokens.logprobs,
        text_offset=tuple(offsets),
        top_logprobs=tuple(_by_text(top, decode) for top in tokens.alternatives) if with_top else None,
    )


def _by_text(alternatives: Sequence[Alternative], decode: Decode) -> dict[str, float]:
    """{text: logprob}, best first; two ids of the same text keep the likelier one (the legacy shape has no ids)."""
    top: dict[str, float] = {}
    for token_id, logprob in alternatives:
        top.setdefault(decode([token_id]), logprob)
    return top


async def _prompt_ids(backend: InferenceBackend, request: CompletionRequest) -> tuple[int, ...]:
    if not isinstance(request.prompt, str):
        return request.prompt
    return (await asyncio.to_thread(backend.tokenize, TokenizeRequest(text=request.prompt))).token_ids


def _chunk(head: AnswerHead, choices: tuple[CompletionChoice, ...], used: Usage | None = None) -> CompletionResponse:
    return CompletionResponse(id=head.id, created=head.created, model=head.model, choices=choices, usage=used)
