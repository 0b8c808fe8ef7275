"""RemoteInferenceClient against a scripted server on 127.0.0.1: retries, timeouts, auth and logging.

The server is a real HTTP peer (the standard library's threading HTTP/1.1 server on an OS-chosen port,
in a thread); it answers from a script keyed by request_id, so each test decides exactly which failures
the client sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from foveal.renderers.inference.client import ClientTimeouts, RemoteInferenceClient
from foveal.renderers.inference.errors import InferenceError, InferenceTimeout
from foveal.renderers.inference.openai import AssistantReply, ChatChoice, ChatCompletionRequest, ChatCompletionResponse
from foveal.renderers.inference.retry import RetryPolicy
from foveal.renderers.inference.wire import (
    SESSION_HEADER,
    Completion,
    ControlResponse,
    ErrorBody,
    ErrorDetail,
    GenerateRequest,
    GenerateResponse,
    ServerInfo,
)

TOKEN = "tok-5ecret-abc"
PASSWORD = "pa55word"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=20.0)


class Script:
    """What the scripted server saw: every request's id, headers and body, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []

    def count(self, request_id: str) -> int:
        return sum(1 for rid, _, _ in self.calls if rid == request_id)


Answer = tuple[int, str]  # status, JSON body


def error(status: int, code: str, message: str, field: str | None = None) -> Answer:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))  # type: ignore[arg-type]
    return status, body.model_dump_json()


def generate_answer(script: Script, body: bytes) -> Answer:
    """`request_id` = `<behaviour>-<n>`: abort-2 fails twice with 503 aborted, then answers; see below."""
    rid = json.loads(body)["request_id"]
    behaviour, _, n = rid.rpartition("-")
    seen = script.count(rid)
    if behaviour == "abort" and seen <= int(n):
        return error(503, "aborted", "weights are being updated")
    if behaviour == "overloaded":
        return error(503, "overloaded", "queue full")
    if behaviour == "invalid":
        return error(422, "invalid_request", "too many stops", field="sampling.stop")
    if behaviour == "leaky":
        return error(400, "invalid_request", f"got Authorization: Bearer {TOKEN}")
    if behaviour == "slow":
        time.sleep(float(n))
    if behaviour == "garbage":
        return 200, "{}"
    answer = GenerateResponse(
        request_id=rid, model="scripted", weight_version=seen, prompt_tokens=1,
        completions=(Completion(token_ids=(1, 2), logprobs=(-0.5, -0.25), finish_reason="stop", text="ok"),),
    )  # fmt: skip
    return 200, answer.model_dump_json()


def chat_answer(body: bytes) -> Answer:
    asked = ChatCompletionRequest.model_validate_json(body)
    answer = ChatCompletionResponse(
        id="chat-1", created=0, model=asked.model, weight_version=3,
        choices=(ChatChoice(index=0, message=AssistantReply(content=f"echo {asked.messages[-1].content}")),),
    )  # fmt: skip
    return 200, answer.model_dump_json()


def pause_answer(headers: dict[str, str]) -> Answer:
    if headers.get("authorization") != f"Bearer {TOKEN}":
        return error(401, "unauthorized", "a bearer token is required")
    return 200, ControlResponse(state="paused", weight_version=0, in_flight=0).model_dump_json()


INFO = ServerInfo(
    model="scripted", family="qwen2_vl", backend="transformers", max_model_len=64, weight_version=0,
    state="serving", image_token_id=None, stop_token_ids=(0,), layout_fingerprint=None,
)  # fmt: skip


class ScriptedHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as a real server speaks it; records every call in `script`."""

    protocol_version = "HTTP/1.1"
    script: Script

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {key.lower(): value for key, value in self.headers.items()}
        kind = json.loads(body).get("request_id", "") if self.path == "/v1/generate" else self.path.rsplit("/", 1)[1]
        self.script.calls.append((kind, headers, body))
        if self.path == "/v1/generate":
            self.answer(*generate_answer(self.script, body))
        elif self.path == "/v1/chat/completions":
            self.answer(*chat_answer(body))
        elif self.path == "/control/pause":
            self.answer(*pause_answer(headers))
        else:
            self.answer(*error(404, "not_found", self.path))

    def do_GET(self) -> None:
        self.script.calls.append((self.path, {key.lower(): value for key, value in self.headers.items()}, b""))
        self.answer(*((200, INFO.model_dump_json()) if self.path == "/v1/info" else error(404, "not_found", self.path)))

    def answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: what a real server sees too

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: the tests read `script.calls`, not an access log."""


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # slow handlers must not hold up shutdown


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def server_url(script: Script) -> Iterator[str]:
    """The scripted server on 127.0.0.1 (port chosen by the OS) in a background thread."""
    handler = type("Handler", (ScriptedHandler,), {"script": script})
    server = ScriptedServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dead_url() -> str:
    """A loopback URL where nothing listens (the OS just handed the port out and it was closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def client_for(*urls: str, **settings: object) -> RemoteInferenceClient:
    settings.setdefault("retry", FAST_RETRY)
    return RemoteInferenceClient(base_urls=urls, api_token=TOKEN, **settings)  # type: ignore[arg-type]


def request(request_id: str) -> GenerateRequest:
    return GenerateRequest(prompt_token_ids=(5, 6, 7), request_id=request_id)


async def generate(client: RemoteInferenceClient, request_id: str, **kwargs: object) -> GenerateResponse:
    async with client:
        return await client.generate(request(request_id), **kwargs)  # type: ignore[arg-type]


def test_aborted_requests_are_retried_until_they_complete(server_url: str, script: Script) -> None:
    answer = asyncio.run(generate(client_for(server_url), "abort-2"))
    assert answer.request_id == "abort-2" and answer.completions[0].token_ids == (1, 2)
    assert script.count("abort-2") == 3


def test_retries_stop_after_max_attempts_with_the_last_error(server_url: str, script: Script) -> None:
    with pytest.raises(InferenceError) as caught:
        asyncio.run(generate(client_for(server_url), "abort-99"))
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (503, "aborted", 4)
    assert script.count("abort-99") == 4


@pytest.mark.parametrize("rid", ["invalid-0", "overloaded-0"])
def test_client_errors_and_non_retryable_503_are_not_retried(server_url: str, script: Script, rid: str) -> None:
    with pytest.raises(InferenceError) as caught:
        asyncio.run(generate(client_for(server_url), rid))
    assert caught.value.attempts == 1 and script.count(rid) == 1
    if rid.startswith("invalid"):
        assert (caught.value.status, caught.value.field) == (422, "sampling.stop")


def test_connection_errors_fail_over_to_the_next_url(server_url: str, script: Script) -> None:
    answer = asyncio.run(generate(client_for(dead_url(), server_url), "plain-failover"))
    assert answer.request_id == "plain-failover" and script.count("plain-failover") == 1


def test_unreachable_server_raises_after_bounded_attempts() -> None:
    with pytest.raises(InferenceError) as caught:
        asyncio.run(generate(client_for(dead_url()), "plain-dead"))
    assert caught.value.status is None and caught.value.code == "unavailable" and caught.value.attempts == 4


def test_read_timeout_is_typed_and_not_retried(server_url: str, script: Script) -> None:
    client = client_for(server_url, timeouts=ClientTimeouts(read_s=0.2))
    with pytest.raises(InferenceTimeout) as caught:
        asyncio.run(generate(client, "slow-1.0"))
    assert caught.value.attempts == 1 and script.count("slow-1.0") == 1


def test_overall_deadline_bounds_a_call(server_url: str, script: Script) -> None:
    """The 0.3 s deadline ends the call while the server still works on its 1.1 s answer: a timeout that names the
    deadline (not the 600 s read timeout) after the one request, which is not retried."""
    client = client_for(server_url, retry=RetryPolicy(deadline_s=0.3, initial_backoff_s=0.01))
    with pytest.raises(InferenceTimeout, match="deadline") as caught:
        asyncio.run(generate(client, "slow-1.1"))
    assert caught.value.attempts == 1 and script.count("slow-1.1") == 1


def test_malformed_success_answer_is_an_error(server_url: str) -> None:
    with pytest.raises(InferenceError, match="GenerateResponse") as caught:
        asyncio.run(generate(client_for(server_url), "garbage-0"))
    assert caught.value.code == "internal"


def test_token_and_session_travel_as_headers(server_url: str, script: Script) -> None:
    asyncio.run(generate(client_for(server_url), "plain-headers", session_id="conversation-7"))
    (_, headers, body), = [call for call in script.calls if call[0] == "plain-headers"]  # fmt: skip
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers[SESSION_HEADER.lower()] == "conversation-7"
    assert headers["content-type"] == "application/json"
    assert GenerateRequest.model_validate_json(body) == request("plain-headers")  # JSON on the wire, no pickle


def test_chat_completions_round_trip_the_openai_models(server_url: str, script: Script) -> None:
    async def chat() -> ChatCompletionResponse:
        async with client_for(server_url) as client:
            messages = [{"role": "user", "content": "hello"}]
            request = ChatCompletionRequest.model_validate({"model": "m", "messages": messages})
            return await client.chat_completions(request, session_id="chat-session")

    answer = asyncio.run(chat())
    assert answer.choices[0].message.content == "echo hello" and answer.weight_version == 3
    (_, headers, _), = [call for call in script.calls if call[0] == "completions"]  # fmt: skip
    assert headers[SESSION_HEADER.lower()] == "chat-session"


def test_url_credentials_are_sent_as_basic_auth_without_a_token(server_url: str, script: Script) -> None:
    client = RemoteInferenceClient(base_urls=(server_url.replace("//", f"//alice:{PASSWORD}@"),), retry=FAST_RETRY)
    asyncio.run(generate(client, "plain-basic"))
    (_, headers, _), = [call for call in script.calls if call[0] == "plain-basic"]  # fmt: skip
    scheme, _, credential = headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(credential, validate=True).decode() == f"alice:{PASSWORD}"


def test_control_calls_carry_the_bearer_token(server_url: str) -> None:
    async def pause(client: RemoteInferenceClient) -> ControlResponse:
        async with client:
            return await client.pause("abort")

    assert asyncio.run(pause(client_for(server_url))).state == "paused"
    with pytest.raises(InferenceError) as caught:
        asyncio.run(pause(RemoteInferenceClient(base_urls=(server_url,), retry=FAST_RETRY)))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_secrets_never_reach_logs_or_errors(server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    for name in (None, "httpx", "httpcore"):  # named too: an imported library (the tinker SDK) may quiet httpx
        caplog.set_level(logging.DEBUG, logger=name)
    url = server_url.replace("//", f"//alice:{PASSWORD}@")
    client = client_for(dead_url().replace("//", f"//bob:{PASSWORD}@"), url)
    asyncio.run(generate(client, "abort-1"))  # one connection failure and one abort, both logged
    with pytest.raises(InferenceError) as caught:
        asyncio.run(generate(client_for(url), "leaky-0"))
    assert "retry" in caplog.text and "HTTP Request" in caplog.text
    for text in (caplog.text, str(caught.value), repr(caught.value)):
        assert TOKEN not in text and PASSWORD not in text
    assert "Bearer ***" in str(caught.value)


def test_one_client_serves_many_event_loops_and_concurrent_calls(server_url: str) -> None:
    client = client_for(server_url)

    async def many(prefix: str) -> list[GenerateResponse]:
        return list(await asyncio.gather(*(client.generate(request(f"{prefix}-{i}")) for i in range(16))))

    first, second = asyncio.run(many("loop1")), asyncio.run(many("loop2"))  # the first loop is closed by now
    assert Counter(a.request_id for a in first + second) == Counter([f"loop{j}-{i}" for j in (1, 2) for i in range(16)])


def test_client_json_crosses_a_process_boundary(server_url: str) -> None:
    """A worker process receives the client as JSON and calls the server with it."""
    code = (
        "import asyncio, sys\n"
        "from foveal.renderers.inference.client import RemoteInferenceClient\n"
        "client = RemoteInferenceClient.model_validate_json(sys.stdin.read())\n"
        "print(asyncio.run(client.info()).model_dump_json())\n"
    )
    payload = client_for(server_url).model_dump_json()
    done = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ServerInfo.model_validate_json(done.stdout).model == "scripted"
    assert TOKEN not in done.stderr
