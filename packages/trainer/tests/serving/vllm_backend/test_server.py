"""`VLLMBackend` behind the shared HTTP app: the data plane, tokens, errors and the pause modes."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("vllm")

from vllm.config import VllmConfig
from vllm.exceptions import QueueOverflowError, VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.wire import Endpoints
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.serving.backends.vllm.backend import VLLMBackend
from foveal.trainer.serving.backends.vllm.mm_inputs import ImageChecks
from foveal.trainer.serving.testing import RunningServer, start_server

from .support import (
    SCRIPT,
    STOP,
    VLM,
    ScriptedEngine,
    image_prompt,
    picture,
    post,
    refs,
    serve_config,
    wait_until,
)

# -- the backend behind the shared HTTP app -----------------------------------------------------------------


@pytest.fixture(scope="module")
def vlm_server(vlm_root: Path, vlm_config: VllmConfig, tiny_cache_root: Path) -> Iterator[RunningServer]:
    config = serve_config(vlm_root, VLM)
    backend = VLLMBackend(config, cache_root=tiny_cache_root, engine=ScriptedEngine(vlm_config))
    with start_server(config, backend=backend) as running:
        yield running


@pytest.fixture
def engine(vlm_server: RunningServer) -> Iterator[ScriptedEngine]:
    """The VLM server's scripted engine, fresh records; the server is left serving whatever a test did."""
    scripted = vlm_server.backend.engine
    scripted.calls.clear()
    scripted.inputs.clear()
    yield scripted
    scripted.hold = False
    scripted.fail_with = None
    if vlm_server.backend.state != "serving":
        post(vlm_server, Endpoints.RESUME, control=True)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def generate_body(rendered: RenderedConversation, **sampling: Any) -> dict[str, Any]:
    return {"prompt_token_ids": list(rendered.token_ids), "image_refs": refs(rendered), "sampling": sampling}


def test_generate_with_images_goes_through_vllms_renderer(
    vlm_server: RunningServer, engine: ScriptedEngine, client_renderer: Renderer
) -> None:
    rendered = image_prompt(client_renderer, picture(120, 90, 6))
    answer = post(
        vlm_server, Endpoints.GENERATE, generate_body(rendered, max_tokens=8, n=2, seed=1, stop_token_ids=[STOP])
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prompt_tokens"] == len(rendered.token_ids) and body["weight_version"] == 0
    assert [c["token_ids"] for c in body["completions"]] == [[*SCRIPT, STOP]] * 2
    assert body["completions"][0]["logprobs"] == [-0.25, -0.5, -0.75, -1.0]
    assert body["completions"][0]["finish_reason"] == "stop"
    assert body["completions"][0]["text"] == client_renderer.tokenizer.decode(
        [*SCRIPT, STOP], skip_special_tokens=False
    )
    (request,) = engine.inputs
    assert request.prompt_token_ids == list(rendered.token_ids)
    assert [feature.identifier for feature in request.mm_features] == [rendered.images[0].descriptor.hash]
    params = request.sampling_params
    assert (params.n, params.seed, params.max_tokens, params.logprobs) == (2, 1, 8, 0)
    assert set(vlm_server.backend.stop_token_ids) <= set(params.stop_token_ids)


def test_chat_completions_render_on_the_server_and_sample_through_vllm(
    vlm_server: RunningServer, engine: ScriptedEngine, client_renderer: Renderer
) -> None:
    image = picture(60, 44, 9)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]
    body = {"model": "tiny:qwen2_5_vl", "messages": [{"role": "user", "content": content}], "max_tokens": 3}
    answer = httpx.post(f"{vlm_server.url}{Endpoints.CHAT_COMPLETIONS}", json={**body, "return_token_ids": True})
    assert answer.status_code == 200, answer.text
    turn = [{"type": "image", "image": url}, {"type": "text", "text": "What is it?"}]  # the same bytes: the store keeps them verbatim
    expected = client_renderer.render([{"role": "user", "content": turn}], add_generation_prompt=True)
    (request,) = engine.inputs
    assert answer.json()["prompt_token_ids"] == request.prompt_token_ids == list(expected.token_ids)
    assert [feature.identifier for feature in request.mm_features] == [expected.images[0].descriptor.hash]
    assert answer.json()["choices"][0]["token_ids"] == list(SCRIPT)


def test_bad_requests_get_4xx_naming_the_field_and_the_server_keeps_serving(
    vlm_server: RunningServer, engine: ScriptedEngine, client_renderer: Renderer
) -> None:
    rendered = image_prompt(client_renderer, picture(80, 80, 7))
    good = generate_body(rendered, max_tokens=4)
    descriptor = rendered.images[0].descriptor.model_copy(update={"layout_fingerprint": "1" * 16})
    bad = {
        "image_refs[0]": ({**good, "image_refs": ["mmraw:x"]}, 400, "invalid_ref"),
        "image_refs[0].layout_fingerprint": ({**good, "image_refs": [encode_mmraw(descriptor)]}, 422, "invalid_ref"),
        "prompt_token_ids[0]": (
            {**good, "prompt_token_ids": [10**9, *good["prompt_token_ids"][1:]]},
            400,
            "invalid_request",
        ),
        "sampling.max_tokens": ({**good, "sampling": {"max_tokens": 600}}, 400, "too_long"),
    }
    for field, (body, status, code) in bad.items():
        answer = post(vlm_server, Endpoints.GENERATE, body)
        error = answer.json()["error"]
        assert (answer.status_code, error["code"], error["field"]) == (status, code, field)
    assert engine.inputs == []
    assert post(vlm_server, Endpoints.GENERATE, good).status_code == 200


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (QueueOverflowError(), 429, "overloaded"),
        (EngineDeadError(), 503, "unavailable"),
        (VLLMValidationError("bad"), 400, "invalid_request"),
        (EngineGenerateError(), 500, "internal"),
    ],
    ids=["queue-full", "engine-dead", "refused", "engine-failed"],
)
def test_engine_failures_become_the_wire_errors(
    vlm_server: RunningServer, engine: ScriptedEngine, failure: Exception, status: int, code: str
) -> None:
    engine.fail_with = failure
    answer = post(vlm_server, Endpoints.GENERATE, {"prompt_token_ids": [1, 2], "sampling": {"max_tokens": 2}})
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert vlm_server.backend.in_flight == 0


def test_tokenize_detokenize_info_and_health(
    vlm_server: RunningServer, client_renderer: Renderer, checks: ImageChecks
) -> None:
    ids = post(vlm_server, Endpoints.TOKENIZE, {"text": "hello world"}).json()["token_ids"]
    assert ids == client_renderer.tokenizer.encode("hello world", add_special_tokens=False)
    assert post(vlm_server, Endpoints.DETOKENIZE, {"token_ids": ids}).json()["text"] == "hello world"
    info = httpx.get(f"{vlm_server.url}{Endpoints.INFO}").json()
    assert info["backend"] == "vllm" and info["family"] == client_renderer.family
    assert info["layout_fingerprint"] == checks.adapter.spec.fingerprint
    assert info["image_token_id"] == checks.adapter.image_token_id and info["max_model_len"] == 512
    health = httpx.get(f"{vlm_server.url}{Endpoints.HEALTH}").json()
    assert health == {"status": "ok", "state": "serving", "in_flight": 0}


@pytest.mark.parametrize(
    "path", [Endpoints.PAUSE, Endpoints.RESUME, Endpoints.RESET_PREFIX_CACHE, Endpoints.UPDATE_WEIGHTS]
)
def test_control_endpoints_need_the_token(vlm_server: RunningServer, engine: ScriptedEngine, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {vlm_server.token}"}):
        answer = httpx.post(f"{vlm_server.url}{path}", json={}, headers=headers, timeout=30)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    assert engine.calls == []


def test_pause_abort_fails_in_flight_requests_retryably_and_new_ones_wait_for_resume(
    vlm_server: RunningServer, engine: ScriptedEngine, pool: ThreadPoolExecutor
) -> None:
    engine.hold = True
    body = {"prompt_token_ids": [1, 2, 3], "sampling": {"max_tokens": 4}}
    in_flight = pool.submit(post, vlm_server, Endpoints.GENERATE, body)
    wait_until(lambda: len(engine.inputs) == 1)
    assert post(vlm_server, Endpoints.PAUSE, {"mode": "abort"}, control=True).json()["state"] == "paused"
    assert (in_flight.result().status_code, in_flight.result().json()["error"]["code"]) == (503, "aborted")
    assert ("pause", "abort", False) in engine.calls
    waited = post(vlm_server, Endpoints.GENERATE, body)  # request_timeout_s is 1 s
    assert (waited.status_code, waited.json()["error"]["code"]) == (503, "unavailable")
    engine.hold = False
    late = pool.submit(post, vlm_server, Endpoints.GENERATE, body)
    time.sleep(0.2)
    assert not late.done()
    assert post(vlm_server, Endpoints.RESUME, control=True).json()["state"] == "serving"
    assert late.result().status_code == 200


def test_pause_keep_holds_requests_until_resume(
    vlm_server: RunningServer, engine: ScriptedEngine, pool: ThreadPoolExecutor
) -> None:
    engine.hold = True
    held = pool.submit(
        post, vlm_server, Endpoints.GENERATE, {"prompt_token_ids": [1, 2], "sampling": {"max_tokens": 2}}
    )
    wait_until(lambda: len(engine.inputs) == 1)
    assert post(vlm_server, Endpoints.PAUSE, {"mode": "keep"}, control=True).json()["in_flight"] == 1
    assert httpx.get(f"{vlm_server.url}{Endpoints.HEALTH}").json()["state"] == "paused"
    assert not held.done()
    post(vlm_server, Endpoints.RESUME, control=True)
    assert held.result().status_code == 200


def test_reset_prefix_cache_drops_running_requests_blocks_too(
    vlm_server: RunningServer, engine: ScriptedEngine
) -> None:
    assert post(vlm_server, Endpoints.RESET_PREFIX_CACHE, control=True).status_code == 200
    assert engine.calls == [("reset_prefix_cache", True)]
