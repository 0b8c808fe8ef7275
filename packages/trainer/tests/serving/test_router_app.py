"""The router over HTTP, in front of scripted servers that run as their own processes (so they can be killed).

What is checked: routing through real sockets (sticky sessions, spreading), failover when a server dies
under a request, exactly one answer per request, control fan-out with the bearer token, a server that
comes back being brought to the fleet's weights before it serves, and the router's own 4xx answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from foveal.configs.router import RouterConfig
from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.renderers.inference.errors import InferenceError
from foveal.renderers.inference.retry import RetryPolicy
from foveal.renderers.inference.wire import SESSION_HEADER, ErrorBody, GenerateRequest, GenerateResponse
from foveal.trainer.serving.fleet import Fleet
from foveal.trainer.serving.router import create_router_app

TOKEN = "router-t0ken-xyz"
SCRIPT = Path(__file__).with_name("scripted_upstream.py")
RETRY = RetryPolicy(max_attempts=6, initial_backoff_s=0.05, max_backoff_s=0.2, deadline_s=30)


class LoopbackServer:
    """The router app under uvicorn on 127.0.0.1 (port chosen by the OS), in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"the router at {self.url} did not start within 30 s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def dead_url() -> str:
    """A loopback URL where nothing listens (the OS just handed the port out and it was closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Upstream:
    name: str
    process: subprocess.Popen[str]
    url: str

    def calls(self, kind: str | None = None) -> list[dict[str, Any]]:
        seen = httpx.get(f"{self.url}/test/calls", timeout=5).json()
        return [call for call in seen if kind is None or call["kind"] == kind]

    def sick(self, on: bool) -> None:
        httpx.post(f"{self.url}/test/sick/{'on' if on else 'off'}", timeout=5).raise_for_status()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@contextmanager
def upstreams(*names: str) -> Iterator[list[Upstream]]:
    """Start one scripted server process per name (in parallel); all are killed at the end."""
    processes = [
        subprocess.Popen([sys.executable, str(SCRIPT), name, TOKEN], stdout=subprocess.PIPE, text=True)
        for name in names
    ]
    try:
        started = []
        for name, process in zip(names, processes, strict=True):
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline() if ready else ""
            assert line.startswith("PORT "), f"scripted server {name} did not start (said {line!r})"
            started.append(Upstream(name, process, f"http://127.0.0.1:{int(line.split()[1])}"))
        for upstream in started:
            wait_until(lambda: httpx.get(f"{upstream.url}/health", timeout=1).status_code == 200)
        yield started
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Router:
    url: str
    fleet: Fleet

    def client(self, token: str | None = TOKEN) -> RemoteInferenceClient:
        return RemoteInferenceClient(base_urls=(self.url,), api_token=token, retry=RETRY)


@contextmanager
def router(urls: list[str], token: str | None = TOKEN, hold_s: float = 10.0) -> Iterator[Router]:
    """The real router app (lifespan on, health checks every 0.1 s) on loopback, in a thread."""
    secret = None if token is None else SecretStr(token)
    checks = {"health_interval_s": 0.1, "health_timeout_s": 1.0, "connect_timeout_s": 1.0}
    fleet = Fleet(urls, secret, RouterConfig(**checks, hold_when_down_s=hold_s))
    server = LoopbackServer(create_router_app(fleet, secret, max_request_bytes=4096)).start()
    try:
        yield Router(server.url, fleet)
    finally:
        server.stop()


def wait_until(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass  # not up yet
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def prompt(request_id: str) -> GenerateRequest:
    return GenerateRequest(prompt_token_ids=(3, 4, 5), request_id=request_id)


async def generate_all(
    client: RemoteInferenceClient, ids: list[str], session: str | None = None
) -> list[GenerateResponse]:
    async with client:
        return list(await asyncio.gather(*(client.generate(prompt(rid), session_id=session) for rid in ids)))


@pytest.fixture(scope="module")
def pair() -> Iterator[list[Upstream]]:
    with upstreams("alpha", "beta") as started:
        yield started


@pytest.fixture(scope="module")
def fronted(pair: list[Upstream]) -> Iterator[Router]:
    with router([upstream.url for upstream in pair]) as started:
        yield started


def test_requests_spread_over_servers_and_each_is_answered_once(fronted: Router) -> None:
    ids = [f"spread-{i}" for i in range(20)]
    answers = asyncio.run(generate_all(fronted.client(), ids))
    assert Counter(answer.request_id for answer in answers) == Counter(ids)
    assert {answer.model for answer in answers} == {"alpha", "beta"}


def test_a_session_sticks_to_one_server(fronted: Router, pair: list[Upstream]) -> None:
    answers = asyncio.run(generate_all(fronted.client(), [f"sticky-{i}" for i in range(8)], session="conv-1"))
    assert len({answer.model for answer in answers}) == 1
    (server,) = [upstream for upstream in pair if upstream.name == answers[0].model]
    sent = [call for call in server.calls("generate") if "sticky-" in str(call["body"])]
    assert len(sent) == 8 and all(call["headers"]["x-session-id"] == "conv-1" for call in sent)


def test_upstreams_get_their_own_host_and_the_token_not_the_callers(fronted: Router, pair: list[Upstream]) -> None:
    answer = httpx.post(
        f"{fronted.url}/v1/generate", content=prompt("host-1").model_dump_json(),
        headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 200
    (call,) = [c for u in pair for c in u.calls("generate") if "host-1" in str(c["body"])]
    server = next(u for u in pair if u.name == GenerateResponse.model_validate_json(answer.content).model)
    assert call["headers"]["host"] == server.url.removeprefix("http://")
    assert call["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_upstream_4xx_answers_pass_through_unchanged(fronted: Router) -> None:
    async def tokenize() -> tuple[int, ...]:
        async with fronted.client() as client:
            return await client.tokenize("hi")

    with pytest.raises(InferenceError) as caught:
        asyncio.run(tokenize())
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (422, "invalid_request", 1)
    assert "refuses to tokenize" in caught.value.message


def test_info_and_health_describe_the_fleet(fronted: Router) -> None:
    async def both() -> tuple[object, object]:
        async with fronted.client() as client:
            return await client.info(), await client.health()

    info, health = asyncio.run(both())
    assert info.backend == "router" and info.model in {"alpha", "beta"}  # type: ignore[attr-defined]
    assert health.status == "ok"  # type: ignore[attr-defined]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_control_needs_the_bearer_token(fronted: Router, pair: list[Upstream], token: str | None) -> None:
    before = [len(upstream.calls("pause")) for upstream in pair]
    with pytest.raises(InferenceError) as caught:
        asyncio.run(fronted.client(token).pause("abort"))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert [len(upstream.calls("pause")) for upstream in pair] == before  # never reached a server


def test_data_plane_needs_the_token_when_one_is_configured(fronted: Router) -> None:
    answer = httpx.post(f"{fronted.url}/v1/generate", content=prompt("anon").model_dump_json())
    assert answer.status_code == 401
    assert ErrorBody.model_validate_json(answer.content).error.code == "unauthorized"


def test_router_rejects_bad_requests_itself(fronted: Router) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("/control/pause", b'{"mode": "sleep"}', {}, 422, "mode"),
        ("/control/update_weights", b'{"path": ""}', {}, 422, "path"),
        ("/v1/generate", b"x" * 5000, {}, 413, "body"),
        ("/v1/generate", b"{}", {SESSION_HEADER: "s" * 300}, 400, SESSION_HEADER),
    ]
    for path, body, headers, status, field in cases:
        answer = httpx.post(f"{fronted.url}{path}", content=body, headers={**auth, **headers})
        assert answer.status_code == status, (path, answer.text)
        assert ErrorBody.model_validate_json(answer.content).error.field == field
    assert httpx.get(f"{fronted.url}/health").status_code == 200  # still serving


def test_control_fans_out_and_a_returning_server_is_brought_in_step() -> None:
    with upstreams("one", "two", "three") as (one, two, three), router([one.url, two.url, three.url]) as front:
        wait_until(lambda: len(front.fleet.table.healthy()) == 3)
        three.sick(True)
        wait_until(lambda: 2 not in front.fleet.table.healthy())
        client = front.client()

        async def update() -> object:
            async with client:
                await client.pause("abort")
                updated = await client.update_weights("/ckpt/step-7", 7)
                await client.resume()
                return updated

        assert asyncio.run(update()).weight_version == 7  # type: ignore[attr-defined]
        for server in (one, two):
            control = ("pause", "update_weights", "resume")
            assert [call["kind"] for call in server.calls() if call["kind"] in control] == list(control)
            assert all(call["headers"]["authorization"] == f"Bearer {TOKEN}" for call in server.calls("pause"))
        three.sick(False)
        wait_until(lambda: 2 in front.fleet.table.healthy())
        (update,) = three.calls("update_weights")
        assert json.loads(str(update["body"])) == {"path": "/ckpt/step-7", "version": 7}
        assert httpx.get(f"{three.url}/v1/info").json()["state"] == "serving"
        assert asyncio.run(client.info()).weight_version == 7


def test_a_failed_update_is_reported_and_not_remembered(fronted: Router) -> None:
    with pytest.raises(InferenceError) as caught:
        asyncio.run(fronted.client().update_weights("/missing", 3))
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert fronted.fleet.wanted.weights is None


def test_a_server_killed_under_requests_loses_none_of_them(caplog: pytest.LogCaptureFixture) -> None:
    """Requests that the doomed server sits on are resent to the survivor when it dies: all 16 complete once."""
    caplog.set_level(logging.INFO)
    with upstreams("doomed", "survivor") as (doomed, survivor), router([doomed.url, survivor.url]) as front:
        wait_until(lambda: len(front.fleet.table.healthy()) == 2)
        ids = [f"hang-on-doomed-{i}" for i in range(16)]

        def sent_to(upstream: Upstream) -> int:
            return len(upstream.calls("generate"))

        async def run() -> list[GenerateResponse]:
            async with front.client() as client:
                requests = asyncio.gather(*(client.generate(prompt(rid)) for rid in ids))
                while not (doomed.calls("generate") and sent_to(doomed) + sent_to(survivor) == len(ids)):
                    await asyncio.sleep(0.05)  # every request has reached a server, some sit on the doomed one
                await asyncio.to_thread(doomed.kill)
                return list(await requests)

        answers = asyncio.run(asyncio.wait_for(run(), timeout=30))
        assert Counter(answer.request_id for answer in answers) == Counter(ids)
        assert {answer.model for answer in answers} == {"survivor"}
        assert Counter(json.loads(str(c["body"]))["request_id"] for c in survivor.calls("generate")) == Counter(ids)
        assert front.fleet.table.healthy() == [1]
    assert "is down" in caplog.text and TOKEN not in caplog.text


def test_no_server_up_is_a_retryable_503_once_the_hold_is_over() -> None:
    with router([dead_url()], hold_s=0.3) as front:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(f"{front.url}/v1/generate", content=prompt("x").model_dump_json(), headers=auth)
        assert answer.status_code == 503
        error = ErrorBody.model_validate_json(answer.content).error
        assert error.code == "unavailable" and "waited 0.3 s" in error.message
        assert httpx.get(f"{front.url}/health").status_code == 503


def test_requests_and_control_calls_wait_for_a_server_to_come_back() -> None:
    """With no server up the router holds a request and a control call instead of answering 503 (a restarting
    server looks like latency); once the server is healthy again it serves both, each once."""
    with upstreams("only") as (only,), router([only.url], hold_s=30) as front:
        wait_until(lambda: front.fleet.table.healthy() == [0])
        only.sick(True)
        wait_until(lambda: not front.fleet.table.healthy())

        async def run() -> tuple[GenerateResponse, object]:
            async with front.client() as client:
                held = asyncio.gather(client.generate(prompt("held")), client.update_weights("/ckpt/step-3", 3))
                await asyncio.sleep(0.5)
                assert not held.done() and not only.calls("generate") and not only.calls("update_weights")
                await asyncio.to_thread(only.sick, False)
                return tuple(await held)  # type: ignore[return-value]

        answer, updated = asyncio.run(asyncio.wait_for(run(), timeout=30))
        assert (answer.request_id, answer.model) == ("held", "only")
        assert updated.weight_version == 3  # type: ignore[attr-defined]
        assert len(only.calls("generate")) == 1 and len(only.calls("update_weights")) == 1


def test_without_a_token_the_data_plane_is_open_and_control_is_closed(pair: list[Upstream]) -> None:
    with router([upstream.url for upstream in pair], token=None) as front:
        wait_until(lambda: len(front.fleet.table.healthy()) == 2)
        client = front.client(token=None)
        (answer,) = asyncio.run(generate_all(client, ["open-1"]))
        assert answer.request_id == "open-1"
        with pytest.raises(InferenceError) as caught:
            asyncio.run(client.resume())
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        assert "no api_token" in caught.value.message


def test_upstream_credentials_never_reach_the_router_logs(
    pair: list[Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "httpx", "httpcore"):  # named too: an imported library (the tinker SDK) may quiet httpx
        caplog.set_level(logging.DEBUG, logger=name)
    with_credentials = [upstream.url.replace("//", "//ops:pa55word@") for upstream in pair]
    with router([*with_credentials, dead_url().replace("//", "//ops:pa55word@")]) as front:
        wait_until(lambda: len(front.fleet.table.healthy()) == 2)
        answers = asyncio.run(generate_all(front.client(), [f"creds-{i}" for i in range(4)]))
        assert len(answers) == 4
    assert "not up yet" in caplog.text and "HTTP Request" in caplog.text
    assert "pa55word" not in caplog.text and TOKEN not in caplog.text


def test_the_router_lists_the_models_its_servers_answer_to(fronted: Router, pair: list[Upstream]) -> None:
    listed = httpx.get(f"{fronted.url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert listed.status_code == 200, listed.text
    ids = [card["id"] for card in listed.json()["data"]]
    assert ids[0] in {upstream.name for upstream in pair} and ids == [ids[0], f"{ids[0]}-alias"]
    assert httpx.get(f"{fronted.url}/v1/models", timeout=10).status_code == 401
