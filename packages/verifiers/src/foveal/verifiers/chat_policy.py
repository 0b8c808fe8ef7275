"""`ChatPolicy`: sampling through any OpenAI-compatible `/v1/chat/completions` endpoint.

For evaluating models Foveal does not serve itself (or a Foveal server through its OpenAI route). The
conversation travels as messages: images as `data:` URLs read from the run's store, tools as JSON
schemas, the reply parsed from `content` and `tool_calls`. There are no token ids, so these rollouts
are scored and reported but cannot be trained on.

OpenAI pairs tool results with calls by id, which `AssistantMessage` does not carry; the episode names
the calls of assistant message i `call_<i>_<j>` and gives the tool messages that follow those ids in
order, which is all a server needs to match them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import httpx
from pydantic import SecretStr

from foveal.renderers.inference.client import check_base_url, split_credentials
from foveal.renderers.inference.errors import InferenceError, InferenceTimeout, error_from_answer
from foveal.renderers.inference.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatToolCall,
    ContentPart,
    FunctionCall,
    ImageContent,
    ImageUrl,
    TextContent,
)
from foveal.renderers.inference.redaction import redact_text, redact_url
from foveal.renderers.inference.wire import Endpoints, SamplingParams
from foveal.renderers.images import stored_media_type
from foveal.renderers.locations import read_location
from foveal.renderers.messages import AssistantMessage, ImagePart, Message, ToolCall, ToolMessage, ToolSpec
from foveal.renderers.store import ImageStore

from foveal.verifiers.policy import PolicyError
from foveal.verifiers.rollout import Turn


class OpenAIChatClient:
    """POSTs chat completions to one base URL with an optional bearer token; one try, errors typed.

    Credentials never appear in errors: the URL is redacted and the token scrubbed from messages.
    """

    def __init__(self, base_url: str, api_key: SecretStr | None = None, *, timeout_s: float = 600.0) -> None:
        self.base_url = check_base_url(base_url)
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        url, auth = split_credentials(self.base_url)
        endpoint = redact_url(url) + Endpoints.CHAT_COMPLETIONS
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
            auth = None
        # OpenAI itself rejects the vLLM extensions by name, so they are sent only when they matter.
        extensions = {"return_token_ids"} | ({"top_k"} if request.top_k == 0 else set())
        body = request.model_dump_json(exclude_none=True, exclude=extensions).encode()
        try:
            answer = await self._client().post(
                url + Endpoints.CHAT_COMPLETIONS, content=body, headers=headers, auth=auth
            )
        except httpx.TimeoutException as error:
            raise InferenceTimeout(endpoint, None, "unavailable", self._redact(repr(error))) from None
        except httpx.TransportError as error:
            raise InferenceError(endpoint, None, "unavailable", self._redact(repr(error))) from None
        if not answer.is_success:
            failure = error_from_answer(endpoint, answer.status_code, answer.content)
            raise InferenceError(endpoint, failure.status, failure.code, self._redact(failure.message), failure.field)
        try:
            return ChatCompletionResponse.model_validate_json(answer.content)
        except ValueError:
            raise InferenceError(endpoint, answer.status_code, "internal", "answer is not a chat completion") from None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        return self._http

    def _redact(self, text: str) -> str:
        return redact_text(text, [self.api_key.get_secret_value()] if self.api_key is not None else [])


class ChatPolicy:
    """Samples episodes from `model` behind `client`; images come from `store`."""

    def __init__(
        self, client: OpenAIChatClient, model: str, store: ImageStore | None, *, max_context: int | None = None
    ) -> None:
        self.client = client
        self.model = model
        self.store = store
        self.max_context = max_context

    def open(self, prompt: Sequence[Message], tools: Sequence[ToolSpec], session_id: str) -> ChatEpisode:
        return ChatEpisode(self, list(prompt), tuple(tools))


class ChatEpisode:
    """A conversation kept as messages; `length` is the token count the server last reported."""

    def __init__(self, policy: ChatPolicy, messages: list[Message], tools: tuple[ToolSpec, ...]) -> None:
        self._policy = policy
        self._messages = messages
        self._tools = tools
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    async def sample(self, sampling: SamplingParams) -> tuple[Turn, AssistantMessage]:
        request = ChatCompletionRequest(
            model=self._policy.model,
            messages=tuple(openai_messages(self._messages, self._policy.store)),
            tools=self._tools or None,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_tokens,
            stop=sampling.stop or None,
            seed=sampling.seed,
        )
        response = await self._policy.client.complete(request)
        if not response.choices:
            raise PolicyError("response.choices", [], "at least one choice")
        choice = response.choices[0]
        reply = AssistantMessage(
            content=choice.message.content or "",
            reasoning_content=choice.message.reasoning_content,
            tool_calls=tuple(_tool_call(call) for call in choice.message.tool_calls or ()),
        )
        self._messages.append(reply)
        if response.usage is not None:
            self._length = response.usage.total_tokens
        finish = "length" if choice.finish_reason == "length" else "stop"
        turn = Turn(text=reply.text(), finish_reason=finish, weight_version=response.weight_version)
        return turn, reply

    def extend(self, messages: Sequence[Message]) -> None:
        self._messages.extend(messages)


def openai_messages(messages: Sequence[Message], store: ImageStore | None) -> list[ChatMessage]:
    """Messages in OpenAI's shape: image parts as `data:` URLs, tool calls and results paired by id."""
    out: list[ChatMessage] = []
    pending: list[str] = []  # ids of the last assistant message's calls not yet answered
    for index, message in enumerate(messages):
        content = _content(message, index, store)
        if isinstance(message, AssistantMessage):
            pending = [f"call_{index}_{j}" for j in range(len(message.tool_calls))]
            calls = tuple(
                ChatToolCall(id=call_id, function=FunctionCall(name=call.name, arguments=call.arguments_json()))
                for call_id, call in zip(pending, message.tool_calls)
            )
            out.append(ChatMessage(role="assistant", content=content, tool_calls=calls or None))
        elif isinstance(message, ToolMessage):
            call_id = message.tool_call_id or (pending.pop(0) if pending else f"call_{index}")
            out.append(ChatMessage(role="tool", content=content, tool_call_id=call_id, name=message.name))
        else:
            out.append(ChatMessage(role=message.role, content=content))
    return out


def _content(message: Message, index: int, store: ImageStore | None) -> str | tuple[ContentPart, ...]:
    if isinstance(message.content, str):
        return message.content
    parts: list[ContentPart] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            parts.append(ImageContent(image_url=ImageUrl(url=_data_url(part, index, store))))
        else:
            parts.append(TextContent(text=part.text))
    return tuple(parts)


def _data_url(part: ImagePart, index: int, store: ImageStore | None) -> str:
    """The image as a `data:` URL of its own format, read under the store's location rules (prompts hold
    store URIs)."""
    if store is None:
        raise PolicyError(f"messages[{index}].content", "<image>", "a chat policy with an image store")
    data = read_location(part.image, store.locations)
    if not isinstance(data, bytes):
        raise PolicyError(f"messages[{index}].content", type(part.image).__name__, "an image stored as a file")
    return f"data:{stored_media_type(data)};base64," + base64.b64encode(data).decode("ascii")


def _tool_call(call: ChatToolCall) -> ToolCall:
    """A reply's tool call; arguments that are not a JSON object stay as their text for the tool to refuse."""
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        return ToolCall(name=call.function.name, arguments=call.function.arguments)
    if not isinstance(arguments, dict):
        return ToolCall(name=call.function.name, arguments=call.function.arguments)
    return ToolCall(name=call.function.name, arguments=arguments)
