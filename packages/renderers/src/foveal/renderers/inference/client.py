"""`RemoteInferenceClient`: the async client of a Foveal inference server or router.

The client object holds only settings: base URL(s), the bearer token, timeouts and the retry policy.
It pickles and round-trips through JSON, so an orchestrator can hand it to worker processes; the
httpx connection pool is created lazily, one per process and event loop, and is never serialized.

Secrets: the token is a SecretStr and the URLs are shown redacted in repr/str, log lines and errors.
The JSON form does carry the token (that is how a worker receives it): treat it like a secret file.
Credentials in a URL (`user:pass@`) become HTTP basic auth, so the URL httpx logs has none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_serializer

from foveal.renderers.inference.errors import InferenceError, InferenceTimeout, error_from_answer
from foveal.renderers.inference.openai import ChatCompletionRequest, ChatCompletionResponse
from foveal.renderers.inference.redaction import redact_text, redact_url
from foveal.renderers.inference.retry import RetryPolicy, backoff_s, is_retryable_status
from foveal.renderers.inference.wire import (
    SESSION_HEADER,
    ControlResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    Endpoints,
    GenerateRequest,
    GenerateResponse,
    Health,
    PauseMode,
    PauseRequest,
    ServerInfo,
    TokenizeRequest,
    TokenizeResponse,
    UpdateWeightsRequest,
)

logger = logging.getLogger(__name__)
ResponseT = TypeVar("ResponseT", bound=BaseModel)
_SCHEMES = frozenset({"http", "https"})


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and no query or fragment; the trailing slash is dropped."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"base_urls: expected a well-formed http(s) URL, got {redact_url(url)!r}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(f"base_urls: expected an http(s) URL with a host, got {redact_url(url)!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_urls: expected a URL without query or fragment, got {redact_url(url)!r}")
    return url.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(check_base_url)]


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without `user:pass@`, and those credentials as basic auth (None when there are none)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user, password = unquote(parts.username), unquote(parts.password or "")  # `al%40ice` means `al@ice`
    return urlunsplit(parts._replace(netloc=netloc)), httpx.BasicAuth(user, password)


class ClientTimeouts(BaseModel):
    """Per-attempt timeouts; reads are long because one generate call may sample many tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_s: float = Field(default=5.0, gt=0.0, description="Opening a connection.")
    read_s: float = Field(default=600.0, gt=0.0, description="Waiting for the answer (or its next bytes).")
    write_s: float = Field(default=30.0, gt=0.0, description="Sending the request.")
    pool_s: float = Field(default=600.0, gt=0.0, description="Waiting for a free pooled connection.")

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s)


class _Pools:
    """The httpx clients of one RemoteInferenceClient, one per event loop of this process.

    An httpx.AsyncClient belongs to the loop that first used it and cannot cross a fork or a pickle, so
    pickling or copying yields an empty set and a forked child starts its own.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __reduce__(self) -> tuple[type[_Pools], tuple[()]]:
        return _Pools, ()

    def __eq__(self, other: object) -> bool:
        """Connections are a cache, not part of a client's value: two clients with equal settings are equal."""
        return isinstance(other, _Pools)

    __hash__ = None  # type: ignore[assignment]

    def for_running_loop(self, max_connections: int) -> httpx.AsyncClient:
        if self.pid != os.getpid():
            self.pid, self.by_loop = os.getpid(), weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        http = self.by_loop.get(loop)
        if http is None or http.is_closed:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            http = httpx.AsyncClient(limits=limits, trust_env=False)  # no proxy or .netrc from the environment
            self.by_loop[loop] = http
        return http

    async def close_running_loop(self) -> None:
        http = self.by_loop.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()


class RemoteInferenceClient(BaseModel):
    """Calls the inference API with retries; tries `base_urls` in turn when one fails.

    Use it as `async with client:` or call `aclose()` at the end of a loop to close its connections.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # inputs may hold secrets

    base_urls: tuple[BaseUrl, ...] = Field(min_length=1, description="Server or router URLs, tried in turn.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token sent with every request.")
    timeouts: ClientTimeouts = ClientTimeouts()
    retry: RetryPolicy = RetryPolicy()
    max_connections: int = Field(default=256, ge=1, description="Open connections per event loop.")

    _pools: _Pools = PrivateAttr(default_factory=_Pools)

    @classmethod
    def for_url(cls, url: str, api_token: str | None = None, **settings: Any) -> Self:
        """A client of one server or router."""
        return cls(base_urls=(url,), api_token=api_token, **settings)

    @field_serializer("api_token", when_used="json")
    def _token_in_json(self, token: SecretStr | None) -> str | None:
        return None if token is None else token.get_secret_value()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, tuple(redact_url(url) for url in value) if name == "base_urls" else value

    # -- data plane ---------------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest, session_id: str | None = None) -> GenerateResponse:
        """Sample completions; `session_id` keeps a conversation on one server (prefix cache) via the router."""
        return await self._call("POST", Endpoints.GENERATE, request, GenerateResponse, session_id)

    async def chat_completions(
        self, request: ChatCompletionRequest, session_id: str | None = None
    ) -> ChatCompletionResponse:
        """OpenAI-shaped chat, rendered and parsed by the server."""
        return await self._call("POST", Endpoints.CHAT_COMPLETIONS, request, ChatCompletionResponse, session_id)

    async def tokenize(self, text: str) -> tuple[int, ...]:
        answer = await self._call("POST", Endpoints.TOKENIZE, TokenizeRequest(text=text), TokenizeResponse)
        return answer.token_ids

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        request = DetokenizeRequest(token_ids=tuple(token_ids))
        return (await self._call("POST", Endpoints.DETOKENIZE, request, DetokenizeResponse)).text

    async def info(self) -> ServerInfo:
        return await self._call("GET", Endpoints.INFO, None, ServerInfo)

    async def health(self) -> Health:
        """One try, no retries: the answer is about now."""
        return await self._call("GET", Endpoints.HEALTH, None, Health, attempts=1)

    # -- control plane ------------------------------------------------------------------------------

    async def pause(self, mode: PauseMode = "wait") -> ControlResponse:
        return await self._call("POST", Endpoints.PAUSE, PauseRequest(mode=mode), ControlResponse)

    async def resume(self) -> ControlResponse:
        return await self._call("POST", Endpoints.RESUME, None, ControlResponse)

    async def update_weights(self, path: str, version: int) -> ControlResponse:
        request = UpdateWeightsRequest(path=path, version=version)
        return await self._call("POST", Endpoints.UPDATE_WEIGHTS, request, ControlResponse)

    async def reset_prefix_cache(self) -> ControlResponse:
        return await self._call("POST", Endpoints.RESET_PREFIX_CACHE, None, ControlResponse)

    async def aclose(self) -> None:
        """Close this event loop's connections (others close with their loops)."""
        await self._pools.close_running_loop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- transport ----------------------------------------------------------------------------------

    async def _call(
        self,
        method: Literal["GET", "POST"],
        path: str,
        body: BaseModel | None,
        response_type: type[ResponseT],
        session_id: str | None = None,
        attempts: int | None = None,
    ) -> ResponseT:
        """One API call under the retry policy; raises the last InferenceError when every try failed."""
        max_attempts = attempts or self.retry.max_attempts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry.deadline_s
        content = None if body is None else body.model_dump_json().encode()
        for attempt in range(1, max_attempts + 1):
            base_url = self.base_urls[(attempt - 1) % len(self.base_urls)]
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._attempt(method, base_url, path, content, response_type, session_id)
            except TimeoutError:
                endpoint = redact_url(split_credentials(base_url)[0]) + path
                message = f"no answer within the {self.retry.deadline_s} s deadline"
                raise InferenceTimeout(endpoint, None, "unavailable", message, attempts=attempt) from None
            except InferenceError as error:
                if not _retryable(error):
                    raise error.after(attempt) from None
                wait = backoff_s(self.retry, attempt)
                if attempt == max_attempts or loop.time() + wait > deadline:
                    raise error.after(attempt) from None
                log = logger.info if error.code == "aborted" else logger.warning
                log("%s; retry %d/%d in %.2f s", error, attempt + 1, max_attempts, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        method: Literal["GET", "POST"],
        base_url: str,
        path: str,
        content: bytes | None,
        response_type: type[ResponseT],
        session_id: str | None,
    ) -> ResponseT:
        url, basic_auth = split_credentials(base_url)
        endpoint = redact_url(url) + path
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if session_id is not None:
            headers[SESSION_HEADER] = session_id
        auth = basic_auth
        if self.api_token is not None:
            headers["Authorization"] = f"Bearer {self.api_token.get_secret_value()}"
            auth = None  # the bearer token wins over URL credentials
        http = self._pools.for_running_loop(self.max_connections)
        try:
            answer = await http.request(
                method, url + path, content=content, headers=headers, auth=auth, timeout=self.timeouts.httpx()
            )
        except httpx.ConnectTimeout as exc:
            raise self._unreachable(endpoint, exc) from None
        except httpx.TimeoutException as exc:
            message = self._redact(f"{type(exc).__name__}: {exc}")
            raise InferenceTimeout(endpoint, None, "unavailable", message) from None
        except httpx.TransportError as exc:
            raise self._unreachable(endpoint, exc) from None
        if answer.is_success:
            try:
                return response_type.model_validate_json(answer.content)
            except ValueError:
                message = f"answer is not a valid {response_type.__name__}"
                raise InferenceError(endpoint, answer.status_code, "internal", message) from None
        error = error_from_answer(endpoint, answer.status_code, answer.content)
        raise InferenceError(endpoint, error.status, error.code, self._redact(error.message), error.field)

    def _unreachable(self, endpoint: str, exc: Exception) -> InferenceError:
        return InferenceError(endpoint, None, "unavailable", self._redact(f"{type(exc).__name__}: {exc}"))

    def _redact(self, text: str) -> str:
        secrets = [self.api_token.get_secret_value()] if self.api_token is not None else []
        return redact_text(text, secrets)


def _retryable(error: InferenceError) -> bool:
    """Connection failures (no answer, not a timeout) and 503 with a retryable code."""
    if isinstance(error, InferenceTimeout):
        return False
    if error.status is None:
        return True
    return is_retryable_status(error.status, error.code)
