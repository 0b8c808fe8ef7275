"""A streamed chat completion: `chat.completion.chunk` events as OpenAI sends them.

First a chunk for each choice with `role: assistant` and empty content; then content (and reasoning) deltas as
the tokens settle them (`deltas.partial_reply`); the last chunk of a choice carries the rest of its final
parse, its tool calls (each whole, in one delta) and its `finish_reason`. With logprobs (and their
`top_logprobs`) or `return_token_ids`, every token is reported in the chunk that follows it, even when it
added no text. With `stream_options.include_usage`, a last chunk has no choices and the usage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from foveal.renderers.inference.openai import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ToolCallDelta,
    Usage,
)
from foveal.renderers.rendering import Renderer
from foveal.trainer.serving.app.deltas import IncrementalDecoder, SentText, partial_reply
from foveal.trainer.serving.app.openai_common import (
    AnswerHead,
    ReportedTokens,
    chat_finish_reason,
    token_logprobs,
    tool_calls,
    usage,
)
from foveal.trainer.serving.engine.requests import TokenEvent, TokenStream


async def chat_chunks(
    events: TokenStream, head: AnswerHead, request: ChatCompletionRequest, renderer: Renderer, prompt_tokens: int
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """The chunks of one streamed chat completion, from its token events."""
    choices = [ChatChoiceStream(index, renderer, request) for index in range(request.n)]
    for index in range(request.n):
        yield _chunk(head, (ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content="")),))
    sampled = 0
    async with aclosing(events):
        async for event in events:
            sampled += 1
            if (choice := choices[event.index].push(event)) is not None:
                yield _chunk(head, (choice,))
    if request.include_usage():
        yield _chunk(head, (), usage(prompt_tokens, sampled))


class ChatChoiceStream:
    """One choice being streamed: its tokens, what was sent, and the tokens not yet reported."""

    def __init__(self, index: int, renderer: Renderer, request: ChatCompletionRequest) -> None:
        self.index = index
        self.renderer = renderer
        self.request = request
        self.reports_tokens = request.logprobs or request.return_token_ids
        self.decoder = IncrementalDecoder(lambda ids: renderer.tokenizer.decode(ids, skip_special_tokens=False))
        self.reasoning, self.content = SentText(), SentText()
        self.token_ids: list[int] = []
        self.unreported: list[TokenEvent] = []

    def push(self, event: TokenEvent) -> ChatChunkChoice | None:
        """The chunk choice this token makes (None when it settles no text and no token is reported)."""
        self.token_ids.append(event.token_id)
        self.unreported.append(event)
        if event.finish_reason is not None:
            return self._last(event.finish_reason)
        if event.token_id not in self.renderer.stop_token_ids:
            self.decoder.push(event.token_id)
        reasoning, content = partial_reply(self.decoder.text, self.renderer.adapter.completion)
        delta = ChatDelta(
            reasoning_content=self.reasoning.advance(reasoning) or None, content=self.content.advance(content) or None
        )
        if delta.content is None and delta.reasoning_content is None and not self.reports_tokens:
            return None
        return self._choice(delta, None)

    def _last(self, finish_reason: str) -> ChatChunkChoice:
        message = self.renderer.parse_completion(self.token_ids)
        calls = tool_calls(message)
        delta = ChatDelta(
            reasoning_content=self.reasoning.advance(message.reasoning_content) or None,
            content=self.content.advance(message.text()) or None,
            tool_calls=tuple(ToolCallDelta(index=i, id=c.id, function=c.function) for i, c in enumerate(calls)) or None,
        )
        return self._choice(delta, chat_finish_reason(calls, finish_reason))

    def _choice(self, delta: ChatDelta, finish_reason: str | None) -> ChatChunkChoice:
        tokens = ReportedTokens.of_events(self.unreported)
        self.unreported = []
        return ChatChunkChoice(
            index=self.index,
            delta=delta,
            finish_reason=finish_reason,
            logprobs=token_logprobs(tokens, self.renderer) if self.request.logprobs else None,
            token_ids=tokens.ids if self.request.return_token_ids else None,
        )


def _chunk(head: AnswerHead, choices: tuple[ChatChunkChoice, ...], used: Usage | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(id=head.id, created=head.created, model=head.model, choices=choices, usage=used)
