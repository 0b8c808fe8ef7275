"""The subset of OpenAI's chat-completions API that Foveal servers speak, for evals and outside tools.

Requests are strict (unknown fields are a 422 naming them, and settings the servers cannot honour, such as
streaming or penalties, are refused rather than ignored); responses are lenient (extra fields ignored), so
the same models parse answers from other OpenAI-compatible servers. Two vLLM-style extensions serve RL:
`top_k`, and `return_token_ids`, which adds the prompt's and each choice's token ids to the response so a
caller can train on exactly what was sampled. Images are `image_url` parts holding a `data:` URL or a
location the server's `[multimodal]` rules allow; the server renders messages with its own renderer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from foveal.renderers.inference.wire import MAX_SAMPLES_PER_REQUEST, MAX_STOP_STRINGS
from foveal.renderers.messages import ToolSpec


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


class ChatCompletionRequest(_Strict):
    """A chat completion request; sampling fields mean what they mean in `wire.SamplingParams`."""

    model: str = Field(min_length=1)
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    tools: tuple[ToolSpec, ...] | None = None
    tool_choice: Literal["auto"] | None = Field(default=None, description="Only `auto` (the template's default).")
    parallel_tool_calls: bool | None = Field(default=None, description="Accepted; the model decides.")
    temperature: float = Field(default=1.0, ge=0.0, le=100.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="vLLM extension; 0 keeps all tokens.")
    max_tokens: int | None = Field(default=None, ge=1, description="None: up to the model's context.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Wins over max_tokens.")
    n: int = Field(default=1, ge=1, le=MAX_SAMPLES_PER_REQUEST)
    stop: str | tuple[str, ...] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: Literal[0] | None = Field(default=None, description="Alternatives are not returned.")
    stream: Literal[False] = Field(default=False, description="Streaming is not supported.")
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

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else (self.stop or ())


class TokenLogprob(_Lenient):
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[dict[str, object], ...] = ()


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
