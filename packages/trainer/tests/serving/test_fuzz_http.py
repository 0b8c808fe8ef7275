"""Property-based fuzzing of every request the server takes, over real HTTP: any JSON body, a valid body with one
field replaced by any JSON value, any `mmraw:` ref. Every answer is a 200 or a clean 4xx `ErrorBody` whose code
is one of the API's, with the field named for a 400/422; never a 5xx; and the server still serves a good request
afterwards (checked once per test, after all examples).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foveal.renderers.inference.openai import OPENAI_PATHS, ErrorResponse
from foveal.renderers.inference.wire import ErrorBody
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.serving.testing import RunningServer

from .conftest import MODEL, generate_body, image_prompt, picture

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLEAN_STATUSES = {200, 400, 401, 404, 405, 408, 413, 422, 429}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (integers beyond 64 bits included)."""


@pytest.fixture(scope="module")
def good(renderer: Renderer) -> RenderedConversation:
    return image_prompt(renderer, "What is this?", picture(40, 32, 9))


@pytest.fixture(scope="module")
def bodies(good: RenderedConversation) -> dict[str, dict[str, Any]]:
    """A valid body per route, the starting point of the one-field mutations."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return {
        "/v1/generate": generate_body(good, max_tokens=2),
        "/v1/chat/completions": chat,
        "/v1/completions": {"model": MODEL, "prompt": "hi", "max_tokens": 2},
        "/v1/tokenize": {"text": "a red square"},
        "/v1/detokenize": {"token_ids": [1, 2, 3]},
    }


def check_clean(answer: httpx.Response, route: str) -> None:
    """A clean status, and an error body naming the field of a bad request (OpenAI's shape on OpenAI routes)."""
    assert answer.status_code in CLEAN_STATUSES, (answer.status_code, answer.text[:300])
    if answer.status_code == 200:
        return
    if route in OPENAI_PATHS:
        field = ErrorResponse.model_validate_json(answer.content).error.param
    else:
        field = ErrorBody.model_validate_json(answer.content).error.field
    if answer.status_code in (400, 422):
        assert field, answer.text[:300]


def post(server: RunningServer, path: str, body: Any) -> httpx.Response:
    content = json.dumps(body).encode()  # the standard library writes integers of any size, as clients may
    return httpx.post(f"{server.url}{path}", content=content, headers={"Content-Type": "application/json"}, timeout=60)


def mutated(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`body` with `key` (a top-level field, or one of `sampling`'s as `sampling.<name>`) set to `value`."""
    head, _, rest = key.partition(".")
    if rest:
        return {**body, head: {**body.get(head, {}), rest: value}}
    return {**body, head: value}


SAMPLING_KEYS = ["sampling." + name for name in ("temperature", "top_p", "top_k", "max_tokens", "stop",
                 "stop_token_ids", "seed", "n", "logprobs", "top_logprobs", "ignore_eos")]  # fmt: skip
FIELDS = {
    "/v1/generate": ["prompt_token_ids", "image_refs", "sampling", "request_id", "extra", *SAMPLING_KEYS],
    "/v1/chat/completions": ["model", "messages", "tools", "temperature", "max_tokens", "stop", "n", "logprobs",
                             "top_logprobs"],  # fmt: skip
    "/v1/completions": ["model", "prompt", "max_tokens", "temperature", "stop", "n", "logprobs", "stream"],
    "/v1/tokenize": ["text", "extra"],
    "/v1/detokenize": ["token_ids", "extra"],
}
ROUTES = st.sampled_from(sorted(FIELDS))


@FUZZ
@given(route=ROUTES, body=JSON)
def test_any_json_body_gets_a_clean_answer(server: RunningServer, route: str, body: Any) -> None:
    check_clean(post(server, route, body), route)


@FUZZ
@given(data=st.data(), value=JSON)
def test_one_field_replaced_by_any_json_gets_a_clean_answer(
    server: RunningServer, bodies: dict[str, dict[str, Any]], data: st.DataObject, value: Any
) -> None:
    route = data.draw(ROUTES)
    key = data.draw(st.sampled_from(FIELDS[route]))
    check_clean(post(server, route, mutated(bodies[route], key, value)), route)


@FUZZ
@given(
    ref=st.one_of(
        st.binary(max_size=300).map(lambda raw: "mmraw:" + base64.urlsafe_b64encode(raw).decode()),
        JSON.map(lambda obj: "mmraw:" + base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()),
        st.text(max_size=60),
    )
)
def test_any_mmraw_ref_is_refused_naming_the_ref(
    server: RunningServer, bodies: dict[str, dict[str, Any]], ref: str
) -> None:
    answer = post(server, "/v1/generate", {**bodies["/v1/generate"], "image_refs": [ref]})
    assert answer.status_code in (400, 404, 422), answer.text[:300]
    assert ErrorBody.model_validate_json(answer.content).error.field.startswith("image_refs[0]")


@FUZZ
@given(field=st.sampled_from(["raw_image_uri", "hash", "family", "layout_fingerprint", "payload", "version"]),
       value=JSON)  # fmt: skip
def test_a_descriptor_with_one_field_replaced_is_refused_naming_it(
    server: RunningServer, good: RenderedConversation, bodies: dict[str, dict[str, Any]], field: str, value: Any
) -> None:
    descriptor = {**orjson.loads(good.images[0].descriptor.model_dump_json()), field: value}
    canonical = json.dumps(descriptor, sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # as encode_mmraw
    ref = "mmraw:" + base64.urlsafe_b64encode(canonical.encode()).decode()
    answer = post(server, "/v1/generate", {**bodies["/v1/generate"], "image_refs": [ref]})
    if answer.status_code == 200:  # the value happened to be the one already there
        assert descriptor == orjson.loads(good.images[0].descriptor.model_dump_json())
        return
    assert answer.status_code in (400, 404, 422), answer.text[:300]
    assert ErrorBody.model_validate_json(answer.content).error.field.startswith("image_refs[0]")


def test_the_server_still_serves_after_the_fuzzing(server: RunningServer, bodies: dict[str, dict[str, Any]]) -> None:
    assert httpx.get(f"{server.url}/health").json()["state"] == "serving"
    answer = post(server, "/v1/generate", bodies["/v1/generate"])
    assert answer.status_code == 200, answer.text[:300]
