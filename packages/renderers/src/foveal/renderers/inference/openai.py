"""The subset of OpenAI's API that Foveal servers speak (chat and text completions, models, errors), for
evals and outside tools such as the official `openai` client.

Requests are strict (unknown fields are a 400 naming them, and settings the servers cannot honour, such as
penalties, are refused rather than ignored); responses are lenient (extra fields ignored), so the same models
parse answers from other OpenAI-compatible servers. Two vLLM-style extensions serve RL: `top_k`, and
`return_token_ids`, which adds the prompt's and each choice's token ids to the response so a caller can train
on exactly what was sampled. Images are `image_url` parts holding a `data:` URL or a location the server's
`[multimodal]` rules allow; the server renders messages with its own renderer. Logprobs, and up to
`MAX_TOP_LOGPROBS` alternatives per token (chat `top_logprobs`, completions `logprobs: N`), are under the raw
model distribution, before temperature or top-k/top-p. `stream: true` answers with server-sent events of the
`*Chunk` models, then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from foveal.renderers.inference.wire import (
    MAX_SAMPLES_PER_REQUEST,
    MAX_STOP_STRINGS,
    MAX_TOKENIZE_CHARS,
    MAX_TOP_LOGPROBS,
    Endpoints,
    FinishReason,
    TokenId,
)
from foveal.renderers.messages import ToolSpec

COMPLETIONS_PATH = "/v1/completions"
OPENAI_PATHS = frozenset({Endpoints.CHAT_COMPLETIONS, COMPLETIONS_PATH, Endpoints.MODELS})
"""Routes that answer errors in OpenAI's shape (`ErrorResponse`); the other routes keep `wire.ErrorBody`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageUrl(_Strict):
    url: str = Field(min_length=1, description="data: URL, or a path / file:// URI under an allowed root.")
    detail: Literal["auto", "low", "high"] | None = Field(default=None, description="Accepted and ignored.")


class TextContent(_Strict):
    type: Literal["text"] = "text"
    text: str


class ImageContent(_Strict):
    type: Literal["image_url"] = "image_url"
    image_url: ImageUrl


ContentPart = Annotated[TextContent | ImageContent, Field(discriminator="type")]


class FunctionCall(_Lenient):
    name: str
    arguments: str = Field(description="JSON text of the arguments, as OpenAI sends it.")


class ChatToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    """One message of the conversation: system, user, assistant (maybe with tool calls) or tool result."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | tuple[ContentPart, ...] | None = None
    name: str | None = None
    tool_calls: tuple[ChatToolCall, ...] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = Field(default=False, description="Send a last chunk with empty choices and the usage.")


class SamplingRequest(_Strict):
    """What chat and text completion requests share; sampling fields mean what they mean in `wire.SamplingParams`."""

    model: str = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="vLLM extension; 0 keeps all tokens.")
    n: int = Field(default=1, ge=1, le=MAX_SAMPLES_PER_REQUEST)
    stop: str | tuple[str, ...] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=0)
    stream: bool = Field(default=False, description="Answer with server-sent events, one chunk per new text.")
    stream_options: StreamOptions | None = Field(default=None, description="Only with stream.")
    frequency_penalty: Literal[0] = 0
    presence_penalty: Literal[0] = 0
    user: str | None = Field(default=None, description="Accepted and ignored.")
    return_token_ids: bool = Field(default=False, description="Foveal/vLLM extension: add token ids to the answer.")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        if isinstance(value, tuple) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        return value

    @field_validator("stream_options")
    @classmethod
    def _options_need_stream(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("only allowed with stream: true")  # OpenAI refuses it too
        return value

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else (self.stop or ())

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def alternatives(self) -> int:
        """How many most likely tokens each sampled token reports (`wire.SamplingParams.top_logprobs`)."""
        return 0


class ChatCompletionRequest(SamplingRequest):
    """A chat completion request."""

    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    tools: tuple[ToolSpec, ...] | None = None
    tool_choice: Literal["auto"] | None = Field(default=None, description="Only `auto` (the template's default).")
    parallel_tool_calls: bool | None = Field(default=None, description="Accepted; the model decides.")
    max_tokens: int | None = Field(default=None, ge=1, description="None: up to the model's context.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Wins over max_tokens.")
    logprobs: bool = False
    top_logprobs: StrictInt | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: this many most likely tokens per token."
    )

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs > 0 needs logprobs: true")  # OpenAI refuses it too
        return value

    def alternatives(self) -> int:
        return self.top_logprobs or 0


PromptText = Annotated[str, Field(min_length=1, max_length=MAX_TOKENIZE_CHARS)]
PromptIds = Annotated[tuple[TokenId, ...], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    """A text completion request: one prompt, as text (tokenized without special tokens) or token ids."""

    prompt: PromptText | PromptIds = Field(
        description="One prompt; lists of prompts are not taken (send one request each)."
    )
    max_tokens: int = Field(default=16, ge=1, description="OpenAI's default, 16.")
    logprobs: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="The sampled tokens' logprobs, and this many most likely tokens at each position (0: none).",
    )
    echo: Literal[False] = Field(default=False, description="The prompt is not echoed.")
    best_of: Literal[1] | None = None
    suffix: None = Field(default=None, description="Insertion is not supported.")

    def alternatives(self) -> int:
        return self.logprobs or 0


class TopLogprob(_Lenient):
    """One of the most likely tokens at a position: its text, logprob and UTF-8 bytes."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


class TokenLogprob(_Lenient):
    """A sampled token of a chat completion; `top_logprobs` are its position's most likely tokens, best first."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


class ChoiceLogprobs(_Lenient):
    content: tuple[TokenLogprob, ...] | None = None


class AssistantReply(_Lenient):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ChatToolCall, ...] | None = None


ChatFinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(_Lenient):
    index: int
    message: AssistantReply
    finish_reason: ChatFinishReason | str | None = None
    logprobs: ChoiceLogprobs | None = None
    token_ids: tuple[int, ...] | None = Field(default=None, description="With return_token_ids: the sampled ids.")


class Usage(_Lenient):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(_Lenient):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: tuple[ChatChoice, ...]
    usage: Usage | None = None
    prompt_token_ids: tuple[int, ...] | None = Field(default=None, description="With return_token_ids.")
    weight_version: int | None = Field(default=None, description="Foveal servers: the weights that answered.")


class ModelCard(_Lenient):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "foveal"


class ModelList(_Lenient):
    """`GET /v1/models`: every name the server answers to, as OpenAI clients list them."""

    object: Literal["list"] = "list"
    data: tuple[ModelCard, ...]


class ToolCallDelta(_Lenient):
    """A tool call in a chunk: sent whole, once, when the completion has ended and parsed."""

    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatDelta(_Lenient):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] | None = None


class ChatChunkChoice(_Lenient):
    index: int
    delta: ChatDelta
    finish_reason: ChatFinishReason | str | None = None
    logprobs: ChoiceLogprobs | None = None
    token_ids: tuple[int, ...] | None = Field(default=None, description="With return_token_ids: this chunk's ids.")


class ChatCompletionChunk(_Lenient):
    """One server-sent event of a streamed chat completion; the usage chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: tuple[ChatChunkChoice, ...]
    usage: Usage | None = None


class CompletionLogprobs(_Lenient):
    """Logprobs of a text completion (OpenAI's legacy shape); with `logprobs: N`, `top_logprobs` holds one
    {token text: logprob} per sampled token, its position's N most likely tokens."""

    tokens: tuple[str, ...] = ()
    token_logprobs: tuple[float, ...] = ()
    text_offset: tuple[int, ...] = ()
    top_logprobs: tuple[dict[str, float], ...] | None = None


class CompletionChoice(_Lenient):
    index: int
    text: str
    finish_reason: FinishReason | str | None = None
    logprobs: CompletionLogprobs | None = None
    token_ids: tuple[int, ...] | None = Field(default=None, description="With return_token_ids: the sampled ids.")


class CompletionResponse(_Lenient):
    """A text completion, and (with stream) each chunk of one: the same shape, text deltas in the choices."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: tuple[CompletionChoice, ...]
    usage: Usage | None = None
    prompt_token_ids: tuple[int, ...] | None = Field(default=None, description="With return_token_ids.")
    weight_version: int | None = Field(default=None, description="Foveal servers: the weights that answered.")


class ErrorObject(_Lenient):
    """OpenAI's error: `param` names the offending field; `code` is Foveal's `wire.ErrorCode`, or
    `model_not_found` for a model the server does not serve."""

    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Lenient):
    """The body of every 4xx/5xx answer on `OPENAI_PATHS`, and the data of an error event that ends a stream."""

    error: ErrorObject


def error_type(status: int) -> str:
    """OpenAI's error type for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, code: str, message: str, param: str | None = None) -> ErrorResponse:
    """A Foveal error (`wire.ErrorCode`, dotted field) in OpenAI's shape; a 404 about `model` is `model_not_found`."""
    code = "model_not_found" if status == 404 and param == "model" else code
    return ErrorResponse(error=ErrorObject(message=message, type=error_type(status), param=param, code=code))
