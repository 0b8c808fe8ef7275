"""The servers behind one router: forwarding with failover, control fan-out, health checks, reconciliation.

Forwarding: each request goes to the server `RoutingTable` picks; when that server cannot be reached or
drops the connection before answering, it is marked down and the request is sent to another one. Every
data-plane call is a pure function of its request (a generate call that died with its server returned
nothing to anyone), so resending it is safe; each server is tried at most once per pass, and the
router answers each request exactly once (the server's answer, or one 503 when none is left). When no
server is up, requests and control calls wait up to `hold_when_down_s` for one (a restarting server).

Control: pause/resume/update_weights/reset_prefix_cache go to every server, one control operation at a
time. The fleet remembers the wanted state (latest weights, paused or not); a server that was down or
failed a control call is brought to that state before it is routed to again, so a server that restarts
mid-run never serves stale weights.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx
from pydantic import SecretStr, ValidationError

from foveal.configs.router import RouterConfig
from foveal.renderers.inference.client import ClientTimeouts, RemoteInferenceClient, split_credentials
from foveal.renderers.inference.errors import InferenceError
from foveal.renderers.inference.openai import ErrorResponse, openai_error
from foveal.renderers.inference.redaction import redact_url
from foveal.renderers.inference.retry import RetryPolicy
from foveal.renderers.inference.wire import (
    SESSION_HEADER,
    ControlResponse,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    PauseMode,
    ServerInfo,
    ServerState,
    UpdateWeightsRequest,
)
from foveal.trainer.serving.routing import RoutingTable

logger = logging.getLogger(__name__)
MAX_ABORT_RETRIES = 8
"""Pauses one request may live through: each abort is a weight update that began while it ran."""
HOLD_POLL_S = 0.05
"""How often a held request looks for a server that came up."""
T = TypeVar("T")
ControlCall = Callable[[RemoteInferenceClient], Awaitable[ControlResponse]]


EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class Forwarded:
    """The one answer the router gives to a proxied request."""

    status: int
    content: bytes
    media_type: str = "application/json"
    events: AsyncGenerator[bytes, None] | None = None
    """An upstream's event stream (`stream: true`), relayed as it arrives in place of `content`."""


@dataclass(frozen=True)
class WantedState:
    """What every server should be running: the latest weights sent, and the pause mode (None: serving)."""

    weights: UpdateWeightsRequest | None = None
    pause: PauseMode | None = None


def aborted(answer: Forwarded) -> bool:
    """Whether a server answered 503 `aborted` (a pause in abort mode ended the request), in either error shape."""
    if answer.status != 503:
        return False
    try:
        return ErrorResponse.model_validate_json(answer.content).error.code == "aborted"
    except ValidationError:
        return False


def error_answer(status: int, code: ErrorCode, message: str, field: str | None = None) -> Forwarded:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return Forwarded(status, body.model_dump_json().encode())


def fleet_state(states: Sequence[ServerState]) -> ServerState:
    """One state for many servers: the least ready one (updating, then paused, then serving)."""
    if "updating" in states:
        return "updating"
    return "paused" if "paused" in states else "serving"


class Fleet:
    """Upstream servers, their health and the wanted state; lives on the router's event loop."""

    def __init__(self, upstreams: Sequence[str], api_token: SecretStr | None, config: RouterConfig) -> None:
        self.config = config
        self.table = RoutingTable(upstreams, config.max_sessions)
        self.wanted = WantedState()
        timeouts = ClientTimeouts(
            connect_s=config.connect_timeout_s, read_s=config.upstream_timeout_s, pool_s=config.upstream_timeout_s
        )
        self.clients = [
            RemoteInferenceClient(
                base_urls=(url,),
                api_token=api_token,
                timeouts=timeouts,
                retry=RetryPolicy(max_attempts=1, deadline_s=config.upstream_timeout_s),
            )
            for url in upstreams
        ]
        self._names = [redact_url(client.base_urls[0]) for client in self.clients]
        # URL credentials travel as basic auth (unless the bearer token is sent), never in a logged URL
        self._targets = [split_credentials(client.base_urls[0]) for client in self.clients]
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_token is not None:
            self._headers["Authorization"] = f"Bearer {api_token.get_secret_value()}"
            self._targets = [(url, None) for url, _ in self._targets]
        self._control = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the proxy's connection pool, check every server once, then keep checking in the background."""
        timeout = httpx.Timeout(self.config.upstream_timeout_s, connect=self.config.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        await self.check_all()
        for index, upstream in enumerate(self.table.upstreams):
            if not upstream.healthy:
                logger.warning("%s is not up yet; it joins once a health check passes", self._names[index])
        self._watcher = asyncio.create_task(self._watch(), name="foveal-router-health")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass  # the cancellation asked for just above
        if self._http is not None:
            await self._http.aclose()
        for client in self.clients:
            await client.aclose()

    def watching(self) -> bool:
        """False once the health loop has died (its error is then logged), so /health can say so."""
        return self._watcher is not None and not self._watcher.done()

    # -- data plane ---------------------------------------------------------------------------------

    async def forward(self, path: str, body: bytes, session_id: str | None) -> Forwarded:
        """`forward_once`, sent again while its failure says the request never ran to an answer:

        - a pause aborted it (503 `aborted`): a server paused in `abort` mode holds new requests until it
          resumes, so the request waits there (at most MAX_ABORT_RETRIES pauses);
        - no server was up: it waits up to `hold_when_down_s` for one to come back (a restarted server is
          brought to the wanted weights before it counts as up).
        The failed try returned nothing to anyone, so a plain HTTP client sees only latency and one generation.
        """
        deadline = asyncio.get_running_loop().time() + self.config.hold_when_down_s
        answer, aborts = await self.forward_once(path, body, session_id), 0
        while True:
            if answer is None:
                if not await self.wait_for_a_server(deadline):
                    waited = f"waited {self.config.hold_when_down_s:g} s"
                    return error_answer(503, "unavailable", f"no inference server is up ({waited})")
            elif aborted(answer) and aborts < MAX_ABORT_RETRIES:
                aborts += 1
                logger.info("%s was aborted by a pause; sending it again (it waits for the resume)", path)
            else:
                return answer
            answer = await self.forward_once(path, body, session_id)

    async def forward_once(self, path: str, body: bytes, session_id: str | None) -> Forwarded | None:
        """POST `body` to one server after another until one answers; its answer, whatever the status, or None
        when no server was up or every one tried failed before answering."""
        assert self._http is not None, "Fleet.start() was not awaited"
        headers = self._headers if session_id is None else {**self._headers, SESSION_HEADER: session_id}
        tried: set[int] = set()
        while (index := self.table.choose(session_id, tried)) is not None:
            tried.add(index)
            self.table.start(index)
            url, auth = self._targets[index]
            relayed = False
            try:
                answer = await self._send(url + path, body, headers, auth)
                relayed = answer.headers.get("content-type", "").startswith(EVENT_STREAM)
            except (httpx.ConnectTimeout, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                self._down(index, f"{path} failed ({type(exc).__name__}); sending it to another server")
                continue
            except httpx.TimeoutException as exc:
                message = f"{self._names[index]} did not answer within {self.config.upstream_timeout_s} s"
                return error_answer(504, "unavailable", f"{message} ({type(exc).__name__})")
            finally:
                if not relayed:
                    self.table.finish(index)
            media_type = answer.headers.get("content-type", "application/json")
            if relayed:
                return Forwarded(answer.status_code, b"", media_type, self._relay(index, answer))
            return Forwarded(answer.status_code, answer.content, media_type)
        return None

    async def _send(self, url: str, body: bytes, headers: dict[str, str], auth: httpx.Auth | None) -> httpx.Response:
        """POST `body`; an event stream comes back unread (`_relay` passes it on), any other answer read whole."""
        assert self._http is not None, "Fleet.start() was not awaited"
        request = self._http.build_request("POST", url, content=body, headers=headers)
        answer = await self._http.send(request, auth=auth, stream=True)
        if answer.headers.get("content-type", "").startswith(EVENT_STREAM):
            return answer
        try:
            await answer.aread()
        finally:
            await answer.aclose()
        return answer

    async def _relay(self, index: int, answer: httpx.Response) -> AsyncGenerator[bytes, None]:
        """An upstream's events as they arrive (nothing is buffered); a server that fails mid-stream gets one
        error event in OpenAI's shape, which ends the stream. The request counts as in flight until then."""
        try:
            async for chunk in answer.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:  # health checks decide whether the server is down
            error = openai_error(502, "unavailable", f"{self._names[index]} failed mid-stream ({type(exc).__name__})")
            yield b"\n\ndata: " + error.model_dump_json().encode() + b"\n\n"
        finally:
            await answer.aclose()
            self.table.finish(index)

    async def wait_for_a_server(self, deadline: float) -> bool:
        """Wait until some server is up (True) or the loop's clock passes `deadline` (False)."""
        loop = asyncio.get_running_loop()
        while not self.table.healthy():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(HOLD_POLL_S, max(0.0, deadline - loop.time())))
        return True

    async def info(self) -> ServerInfo:
        """The fleet as one server: the first healthy server's facts, the oldest weights, the least ready state."""
        answers = await asyncio.gather(*(_attempt(self.clients[i].info()) for i in self.table.healthy()))
        infos = [answer for answer in answers if isinstance(answer, ServerInfo)]
        if not infos:
            raise InferenceError("router", 503, "unavailable", "no inference server is up")
        return infos[0].model_copy(
            update={
                "backend": "router",
                "weight_version": min(info.weight_version for info in infos),
                "state": fleet_state([info.state for info in infos]),
            }
        )

    # -- control plane ------------------------------------------------------------------------------

    async def control(self, call: ControlCall, wanted: Callable[[WantedState], WantedState]) -> ControlResponse:
        """Run `call` on every server at once; the wanted state changes when at least one server took it.

        A server that cannot be reached or fails with a 5xx is marked down and brought to the wanted
        state when it is healthy again. The first 4xx/5xx answer is raised (the request was wrong or a
        server failed); when no server answered at all, a 503.
        """
        await self.wait_for_a_server(asyncio.get_running_loop().time() + self.config.hold_when_down_s)
        async with self._control:
            results = await asyncio.gather(*(self._control_one(i, call) for i in range(len(self.clients))))
            answers = [result for result in results if isinstance(result, ControlResponse)]
            if answers:
                self.wanted = wanted(self.wanted)
        answered = [result for result in results if isinstance(result, InferenceError) and result.status is not None]
        if answered:
            raise answered[0]
        if not answers:
            raise InferenceError("router", 503, "unavailable", "no inference server could be reached")
        return ControlResponse(
            state=fleet_state([answer.state for answer in answers]),
            weight_version=min(answer.weight_version for answer in answers),
            in_flight=sum(answer.in_flight for answer in answers),
        )

    async def _control_one(self, index: int, call: ControlCall) -> ControlResponse | InferenceError:
        result = await _attempt(call(self.clients[index]))
        if isinstance(result, InferenceError) and (result.status is None or result.status >= 500):
            self._down(index, f"a control call failed ({result}); it rejoins once it is healthy and in step")
        return result

    # -- health ---------------------------------------------------------------------------------------

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(index) for index in range(len(self.clients))))

    async def check(self, index: int) -> None:
        """Health-check one server; a server coming back is first brought to the wanted state."""
        try:
            async with asyncio.timeout(self.config.health_timeout_s):
                await self.clients[index].health()
        except (InferenceError, TimeoutError) as error:
            self._down(index, f"health check failed ({error or 'timed out'})")
            return
        if self.table.upstreams[index].healthy:
            return
        async with self._control:
            try:
                ready = await self._reconcile(self.clients[index])
            except InferenceError as error:
                logger.warning("%s stays down: bringing it in step failed (%s)", self._names[index], error)
                return
        if ready and self.table.mark_up(index):
            logger.info("%s is up", self._names[index])

    async def _reconcile(self, client: RemoteInferenceClient) -> bool:
        """Bring one server to the wanted weights and pause state; False while it is busy updating."""
        info = await client.info()
        if info.state == "updating":
            return False
        weights = self.wanted.weights
        if weights is not None and info.weight_version != weights.version:
            await client.update_weights(weights.path, weights.version)  # swapped between decode steps
        if self.wanted.pause is not None and info.state == "serving":
            await client.pause(self.wanted.pause)
        elif self.wanted.pause is None and info.state != "serving":
            await client.resume()
        return True

    async def _watch(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.health_interval_s)
                await self.check_all()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the router's health checks stopped")  # /health reports it from now on
            raise

    def _down(self, index: int, why: str) -> None:
        if self.table.mark_down(index):
            logger.warning("%s is down: %s", self._names[index], why)


async def _attempt(call: Awaitable[T]) -> T | InferenceError:
    """The result of `call`, or the InferenceError it raised (so one failing server does not hide the others)."""
    try:
        return await call
    except InferenceError as error:
        return error


def pause_wanted(mode: PauseMode) -> Callable[[WantedState], WantedState]:
    return lambda wanted: replace(wanted, pause=mode)


def resume_wanted(wanted: WantedState) -> WantedState:
    return replace(wanted, pause=None)


def weights_wanted(request: UpdateWeightsRequest) -> Callable[[WantedState], WantedState]:
    return lambda wanted: replace(wanted, weights=request)
