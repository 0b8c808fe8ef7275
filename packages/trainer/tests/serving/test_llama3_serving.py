"""`foveal serve` on the tiny Llama 3 (text, untied embeddings, llama3 rope scaling): chat requests are rendered by
the family's renderer, tools are written where the Llama 3.1 template writes them, and JSON tool calls are parsed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import ChatCompletionRequest, ChatCompletionResponse
from foveal.renderers.inference.wire import Completion
from foveal.renderers.rendering import Renderer
from foveal.trainer.serving.app.chat import _choice
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server

FAMILY = "llama3"
MODEL = f"tiny:{FAMILY}"
TOOLS = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": {
    "type": "object", "properties": {"factor": {"type": "number"}}, "required": ["factor"]}}}]  # fmt: skip
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "  And goodbye?  "},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_cache_root: Path) -> Iterator[RunningServer]:
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(tmp_path_factory.mktemp("llama3-server"))},
            "inference": {"max_model_len": 512, "request_timeout_s": 60.0},
        }
    )
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Callable[[str], Path]) -> Renderer:
    return load_renderer(tiny_model_dir(FAMILY))


def chat(server: RunningServer, **body: Any) -> ChatCompletionResponse:
    answer = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    return ChatCompletionResponse.model_validate(answer.json())


def template_ids(model_dir: Path, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    """The Llama 3.1 chat template's own text, tokenized without a second BOS."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    return tokenizer.encode(text, add_special_tokens=False)


def test_info_names_the_llama3_family_and_its_stop_tokens(server: RunningServer, renderer: Renderer) -> None:
    info = httpx.get(f"{server.url}/v1/info").json()
    assert (info["family"], info["backend"], info["layout_fingerprint"]) == (FAMILY, "transformers", None)
    stops = {renderer.tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")}
    assert stops <= set(info["stop_token_ids"])


def test_chat_prompt_ids_equal_the_renderer_and_the_template(
    server: RunningServer, renderer: Renderer, tiny_model_dir: Callable[[str], Path]
) -> None:
    response = chat(server, messages=CONVERSATION, max_tokens=6, temperature=0.0, return_token_ids=True)
    rendered = renderer.render(CONVERSATION, add_generation_prompt=True)
    assert list(response.prompt_token_ids or ()) == list(rendered.token_ids)
    assert list(rendered.token_ids) == template_ids(tiny_model_dir(FAMILY), CONVERSATION)
    assert response.usage.prompt_tokens == len(rendered.token_ids)
    assert 1 <= response.usage.completion_tokens <= 6 and response.choices[0].message.content is not None


def test_a_request_with_tools_writes_them_as_the_llama3_template_does(
    server: RunningServer, renderer: Renderer, tiny_model_dir: Callable[[str], Path]
) -> None:
    messages = [{"role": "user", "content": "Zoom in twice."}]
    response = chat(server, messages=messages, tools=TOOLS, max_tokens=4, temperature=0.0, return_token_ids=True)
    prompt_ids = list(response.prompt_token_ids or ())
    assert prompt_ids == list(renderer.render(messages, TOOLS, add_generation_prompt=True).token_ids)
    assert prompt_ids == template_ids(tiny_model_dir(FAMILY), messages, tools=TOOLS)
    prompt = renderer.tokenizer.decode(prompt_ids)
    assert "Environment: ipython\n" in prompt
    assert "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions" in prompt
    assert json.dumps(TOOLS[0], indent=4) + "\n\nZoom in twice.<|eot_id|>" in prompt


def test_a_tool_call_and_its_result_in_the_history_render_as_the_template(
    server: RunningServer, renderer: Renderer, tiny_model_dir: Callable[[str], Path]
) -> None:
    call = {"id": "call_0", "type": "function", "function": {"name": "zoom", "arguments": '{"factor": 2}'}}
    messages = [
        {"role": "user", "content": "Zoom in twice."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "zoomed"},
    ]
    response = chat(server, messages=messages, tools=TOOLS, max_tokens=2, temperature=0.0, return_token_ids=True)
    # OpenAI's arguments are JSON text; the server hands the template the object, so the call prints as sampled.
    history = [messages[0], {**messages[1], "tool_calls": [{**call, "function": {"name": "zoom",
               "arguments": {"factor": 2}}}]}, messages[2]]  # fmt: skip
    prompt_ids = list(response.prompt_token_ids or ())
    assert prompt_ids == list(renderer.render(history, TOOLS, add_generation_prompt=True).token_ids)
    assert prompt_ids == template_ids(tiny_model_dir(FAMILY), history, tools=TOOLS)
    prompt = renderer.tokenizer.decode(prompt_ids)
    assert '<|end_header_id|>\n\n{"name": "zoom", "parameters": {"factor": 2}}<|eot_id|>' in prompt
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"zoomed"<|eot_id|>' in prompt


def test_a_sampled_json_tool_call_comes_back_as_an_openai_tool_call(renderer: Renderer) -> None:
    text = '{"name": "zoom", "parameters": {"factor": 2}}<|eot_id|>'
    ids = tuple(renderer.tokenizer.encode(text, add_special_tokens=False))
    request = ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "zoom"}], tools=TOOLS)
    completion = Completion(token_ids=ids, logprobs=(-0.5,) * len(ids), finish_reason="stop", text=text)
    choice = _choice(0, completion, renderer, request)
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls is not None
    function = choice.message.tool_calls[0].function
    assert (function.name, json.loads(function.arguments)) == ("zoom", {"factor": 2})
