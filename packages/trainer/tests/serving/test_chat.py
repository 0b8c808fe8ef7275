"""`/v1/chat/completions`: rendered by the server's renderer, images through the same contract, answers
in OpenAI's shape (logprobs, tool calls, usage) and consistent with `/v1/generate`."""

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
from foveal.renderers.inference.openai import ChatCompletionRequest, ChatCompletionResponse
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
        ({"top_logprobs": 3}, 400, "top_logprobs"),
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
