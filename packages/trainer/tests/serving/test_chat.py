"""`/v1/chat/completions`: rendered by the server's renderer, images through the same contract, answers
in OpenAI's shape (logprobs and their alternatives, tool calls, usage) and consistent with `/v1/generate`."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionResponse,
    TopLogprob,
)
from foveal.renderers.inference.wire import Completion
from foveal.renderers.rendering import Renderer
from foveal.renderers.tiny import build_tiny_processor
from foveal.trainer.serving.app.chat import _choice
from foveal.trainer.serving.testing import RunningServer

from .conftest import ALIAS, MODEL, picture

TOOLS = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": {
    "type": "object", "properties": {"factor": {"type": "number"}}, "required": ["factor"]}}}]  # fmt: skip


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, **body}, timeout=60)


def streamed(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON events of a streamed answer, up to `[DONE]`."""
    events = []
    request = {"model": MODEL, **body, "stream": True}
    with httpx.stream("POST", f"{server.url}{path}", json=request, timeout=60) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def user_turn(image: Image.Image, text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]}]  # fmt: skip


def test_chat_with_an_image_matches_the_client_renderer_and_generate(server: RunningServer, renderer: Renderer) -> None:
    image = picture(60, 44, 9)
    answer = chat(
        server, messages=user_turn(image, "What is it?"), max_tokens=8, temperature=0.0, logprobs=True,
        return_token_ids=True,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    response = ChatCompletionResponse.model_validate(answer.json())
    rendered = renderer.render(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True,
    )
    assert response.prompt_token_ids == rendered.token_ids
    choice = response.choices[0]
    generated = httpx.post(
        f"{server.url}/v1/generate",
        json={
            "prompt_token_ids": list(rendered.token_ids),
            "image_refs": [encode_mmraw(i.descriptor) for i in rendered.images],
            "sampling": {"temperature": 0.0, "max_tokens": 8},
        },
        timeout=60,
    ).json()["completions"][0]
    assert list(choice.token_ids or ()) == generated["token_ids"]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [t.logprob for t in choice.logprobs.content] == pytest.approx(generated["logprobs"], abs=1e-6)
    assert choice.message.content == renderer.parse_completion(generated["token_ids"]).text()
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(rendered.token_ids)
    assert response.usage.completion_tokens == len(generated["token_ids"])
    assert response.weight_version == 0


def test_n_choices_with_a_seed_are_reproducible(server: RunningServer) -> None:
    body = {"messages": [{"role": "user", "content": "Pick a word."}], "n": 3, "seed": 5, "max_tokens": 6}
    first, again = chat(server, **body).json(), chat(server, **body).json()
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert [c["message"] for c in first["choices"]] == [c["message"] for c in again["choices"]]
    assert "token_ids" not in first["choices"][0] and "logprobs" not in first["choices"][0]


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"model": "someone-else"}, 404, "model"),
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"top_logprobs": 3}, 400, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"frobnicate": 1}, 400, "frobnicate"),
        ({"stop": [str(i) for i in range(17)]}, 400, "stop"),
    ],
)
def test_unsupported_or_bad_chat_requests_are_4xx_naming_the_field(
    server: RunningServer, changes: dict[str, Any], status: int, field: str
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **changes}
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["type"]) == (field, "invalid_request_error")


def test_a_conversation_longer_than_the_context_is_too_long(server: RunningServer) -> None:
    answer = chat(server, messages=[{"role": "user", "content": "word " * 2000}], max_tokens=2)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "too_long"


def test_tools_are_refused_when_the_served_template_has_no_tool_section(server: RunningServer) -> None:
    answer = chat(server, messages=[{"role": "user", "content": "zoom"}], tools=TOOLS, max_tokens=2)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "tools"


def test_sampled_tool_calls_come_back_as_openai_tool_calls(tiny_cache_root: Path) -> None:
    renderer = load_renderer(build_tiny_processor("qwen3_vl", tiny_cache_root))
    text = '<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call><|im_end|>'
    ids = tuple(renderer.tokenizer.encode(text, add_special_tokens=False))
    request = ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "zoom"}], logprobs=True)
    completion = Completion(token_ids=ids, logprobs=(-0.5,) * len(ids), finish_reason="stop", text=text)
    choice = _choice(0, completion, renderer, request)
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("zoom", {"factor": 2})
    assert len(choice.logprobs.content) == len(ids)  # type: ignore[union-attr]


def test_the_served_model_name_is_accepted_listed_and_named_when_wrong(server: RunningServer) -> None:
    hello = [{"role": "user", "content": "hi"}]
    assert chat(server, model=ALIAS, messages=hello, max_tokens=2).status_code == 200
    wrong = chat(server, model="gpt-4o", messages=hello, max_tokens=2)
    assert wrong.status_code == 404 and wrong.json()["error"]["param"] == "model"
    assert wrong.json()["error"]["code"] == "model_not_found"
    assert f"{MODEL!r}, {ALIAS!r}" in wrong.json()["error"]["message"]
    listed = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list" and [card["id"] for card in body["data"]] == [MODEL, ALIAS]
    assert all(card["object"] == "model" and card["owned_by"] == "foveal" for card in body["data"])


def test_chat_top_logprobs_are_the_raw_alternatives_whole_and_streamed(server: RunningServer) -> None:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0.0,
            "logprobs": True, "top_logprobs": 3, "return_token_ids": True}  # fmt: skip
    answer = chat(server, **body)
    assert answer.status_code == 200, answer.text
    whole = ChatCompletionResponse.model_validate(answer.json())
    content = whole.choices[0].logprobs.content or ()  # type: ignore[union-attr]
    assert whole.usage is not None and len(content) == whole.usage.completion_tokens
    for entry in content:
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.top_logprobs[0] == TopLogprob(token=entry.token, logprob=entry.logprob, bytes=entry.bytes)
    chunks = [ChatCompletionChunk.model_validate(event) for event in streamed(server, "/v1/chat/completions", body)]
    reported = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [entry for part in reported for entry in part.content or ()] == list(content)
    generated = httpx.post(
        f"{server.url}/v1/generate",
        json={"prompt_token_ids": list(whole.prompt_token_ids or ()),
              "sampling": {"temperature": 0.0, "max_tokens": 6, "top_logprobs": 3}},
        timeout=60,
    ).json()["completions"][0]  # fmt: skip
    assert [[value for _, value in top] for top in generated["top_logprobs"]] == [
        [top.logprob for top in entry.top_logprobs] for entry in content
    ]
    without = chat(server, **{**body, "top_logprobs": 0}).json()["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in without] == [entry.token for entry in content]
    assert all(entry["top_logprobs"] == [] for entry in without)


def test_text_completion_logprobs_n_add_legacy_top_logprobs_whole_and_streamed(server: RunningServer) -> None:
    body = {"prompt": [5, 17, 42], "max_tokens": 5, "temperature": 0.0, "logprobs": 2}
    answer = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    logprobs = CompletionResponse.model_validate(answer.json()).choices[0].logprobs
    assert logprobs is not None and logprobs.top_logprobs is not None
    assert len(logprobs.top_logprobs) == len(logprobs.tokens) == 5
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert 1 <= len(top) <= 2 and list(top.values()) == sorted(top.values(), reverse=True)
        assert top[token] == value  # greedy: the sampled token is the most likely
    chunks = [CompletionResponse.model_validate(event) for event in streamed(server, "/v1/completions", body)]
    parts = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [top for part in parts for top in part.top_logprobs or ()] == list(logprobs.top_logprobs)
    plain = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, **body, "logprobs": 0}, timeout=60)
    assert "top_logprobs" not in plain.json()["choices"][0]["logprobs"]
