"""The official `openai` client against `foveal serve` (tiny Qwen2.5-VL on CPU) and against a real `foveal router`
process in front of it: plain and streamed chat and text completions, images as data URIs and as files under an
allowed root, tool definitions, logprobs, and errors in OpenAI's shape, each raised as the client's own exception.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.tiny_models import build_tiny_model

MODEL = "tiny:qwen2_5_vl"
TOOL_MODEL = "tiny:qwen3_vl"
ALIAS = "foveal-tiny"
TOKEN = "openai-t0ken-3e1d"
HELLO = [{"role": "user", "content": "Say hello."}]
TOOLS = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": {
    "type": "object", "properties": {"factor": {"type": "number"}}, "required": ["factor"]}}}]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[RunningServer]:
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(root / "run")},
            "multimodal": {"offload_dir": str(root / "store"), "allowed_image_roots": [str(root / "images")]},
            "inference": {"api_token": TOKEN, "max_model_len": 1024, "served_model_name": [ALIAS]},
        }
    )
    with start_server(config, cache_root=root / "tiny") as running:
        yield running


@pytest.fixture(scope="module")
def router(server: RunningServer, root: Path) -> Iterator[str]:
    """`foveal router` in its own process, in front of the server; its base URL."""
    yield from _router_in_front_of(server, root / "router")


@pytest.fixture(scope="module")
def tool_server(root: Path) -> Iterator[RunningServer]:
    """The tiny Qwen3-VL, whose template has a tool section (Qwen2.5-VL's has none)."""
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": TOOL_MODEL},
            "logging": {"run_dir": str(root / "tool-run")},
            "multimodal": {"offload_dir": str(root / "store")},
            "inference": {"api_token": TOKEN, "max_model_len": 1024},
        }
    )
    with start_server(config, cache_root=root / "tiny") as running:
        yield running


@pytest.fixture(scope="module")
def tool_router(tool_server: RunningServer, root: Path) -> Iterator[str]:
    yield from _router_in_front_of(tool_server, root / "tool-router")


def _router_in_front_of(server: RunningServer, folder: Path) -> Iterator[str]:
    folder.mkdir()
    toml = folder / "router.toml"
    toml.write_text(f'[inference]\napi_token = "{TOKEN}"\n[inference.router]\nport = 0\nhealth_interval_s = 0.2\n')
    script = Path(sys.executable).parent / "foveal"
    env = {**os.environ, "HOME": str(folder), "OMP_NUM_THREADS": "1"}
    command = [str(script), "router", "--config", str(toml), "--upstream", server.url]
    with open(folder / "router.log", "w") as log:
        popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        url = _listening(popen)
        _wait_until_healthy(url)
        yield url
    finally:
        popen.kill()
        popen.wait(timeout=30)


@pytest.fixture(params=["server", "router"])
def base_url(request: pytest.FixtureRequest, server: RunningServer) -> str:
    return server.url if request.param == "server" else request.getfixturevalue("router")


@pytest.fixture(params=["server", "router"])
def tool_client(request: pytest.FixtureRequest, tool_server: RunningServer) -> Iterator[openai.OpenAI]:
    url = tool_server.url if request.param == "server" else request.getfixturevalue("tool_router")
    with openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tool_tokenizer(root: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(build_tiny_model(TOOL_MODEL.removeprefix("tiny:"), root / "tiny"))


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0, timeout=120) as client:
        yield client


def _listening(popen: subprocess.Popen[str]) -> str:
    assert popen.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stdout], [], [], 1.0)
        line = popen.stdout.readline() if ready else ""
        if "listening on " in line:
            return line.split("listening on ", 1)[1].split()[0]
        if popen.poll() is not None:
            break
    raise AssertionError(f"the router did not start (exit code {popen.poll()})")


def _wait_until_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the router never saw its server healthy"
        time.sleep(0.1)


def picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def looking_at(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is this?"}]}]  # fmt: skip


def test_models_lists_the_served_names(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL, ALIAS]


def test_a_plain_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=ALIAS, messages=HELLO, max_tokens=4, temperature=0)
    assert answer.object == "chat.completion" and answer.model == MODEL
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 4


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 7, "n": 2}])
def test_a_streamed_chat_adds_up_to_the_same_request_answered_whole(
    client: openai.OpenAI, sampling: dict[str, Any]
) -> None:
    request = {"model": ALIAS, "messages": HELLO, "max_tokens": 16, **sampling}
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert {chunk.choices[0].delta.role for chunk in chunks[: len(whole.choices)]} == {"assistant"}
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert "".join(part.delta.content or "" for part in mine) == choice.message.content
        assert [part.finish_reason for part in mine if part.finish_reason] == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_a_plain_and_a_streamed_text_completion_agree(client: openai.OpenAI) -> None:
    request = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    whole = client.completions.create(**request)
    assert whole.object == "text_completion" and whole.usage is not None
    chunks = list(client.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason
    ]
    assert chunks[-1].usage == whole.usage


def test_a_text_completion_of_token_ids_with_logprobs_and_alternatives(client: openai.OpenAI) -> None:
    request = {"model": MODEL, "prompt": [5, 17, 42], "max_tokens": 5, "logprobs": 2, "temperature": 0}
    answer = client.completions.create(**request)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and answer.usage is not None
    assert len(logprobs.tokens or []) == len(logprobs.token_logprobs or []) == answer.usage.completion_tokens
    assert all(value <= 0 for value in logprobs.token_logprobs or [])
    tops = logprobs.top_logprobs or []
    assert len(tops) == answer.usage.completion_tokens and all(1 <= len(top) <= 2 for top in tops)
    for token, value, top in zip(logprobs.tokens or [], logprobs.token_logprobs or [], tops, strict=True):
        assert top[token] == value == max(top.values())  # greedy: the sampled token is the most likely
    chunks = list(client.completions.create(**request, stream=True))
    streamed = [chunk.choices[0].logprobs for chunk in chunks if chunk.choices and chunk.choices[0].logprobs]
    assert [token for part in streamed for token in part.tokens or []] == logprobs.tokens
    assert [offset for part in streamed for offset in part.text_offset or []] == logprobs.text_offset
    assert [top for part in streamed for top in part.top_logprobs or []] == tops
    plain = client.completions.create(**{**request, "logprobs": 0})
    assert plain.choices[0].logprobs is not None and plain.choices[0].logprobs.top_logprobs is None


def test_an_image_as_a_data_uri_and_as_an_allowed_file_are_the_same_prompt(
    client: openai.OpenAI, root: Path
) -> None:
    image = picture(5)
    folder = root / "images"
    folder.mkdir(exist_ok=True)
    image.save(folder / "picture.png")
    answers = [
        client.chat.completions.create(model=MODEL, messages=looking_at(url), max_tokens=6, temperature=0)
        for url in (data_uri(image), str(folder / "picture.png"), (folder / "picture.png").as_uri())
    ]
    text_only = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    assert answers[0].usage is not None and text_only.usage is not None
    assert answers[0].usage.prompt_tokens > text_only.usage.prompt_tokens + 4  # the image's placeholder run
    assert len({(a.usage.prompt_tokens, a.choices[0].message.content) for a in answers if a.usage}) == 1


def test_a_file_outside_the_allowed_roots_is_a_bad_request(client: openai.OpenAI, root: Path) -> None:
    outside = root / "elsewhere.png"
    picture(6).save(outside)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=looking_at(str(outside)), max_tokens=2)
    assert raised.value.code == "invalid_ref"


def test_tools_are_refused_naming_them_where_the_template_has_no_tool_section(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, tools=TOOLS, max_tokens=2)  # type: ignore[arg-type]
    assert raised.value.param == "tools"  # type: ignore[attr-defined]


def test_tool_definitions_reach_the_prompt_the_template_writes(
    tool_client: openai.OpenAI, tool_tokenizer: PreTrainedTokenizerBase
) -> None:
    answer = tool_client.chat.completions.create(
        model=TOOL_MODEL, messages=HELLO, tools=TOOLS, max_tokens=2, extra_body={"return_token_ids": True}  # type: ignore[arg-type]
    )
    prompt = tool_tokenizer.decode(answer.prompt_token_ids)  # type: ignore[attr-defined]
    expected = tool_tokenizer.apply_chat_template(HELLO, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert prompt == expected and '"name": "zoom"' in prompt


def test_an_earlier_tool_call_and_its_result_are_rendered_as_the_template_writes_them(
    tool_client: openai.OpenAI, tool_tokenizer: PreTrainedTokenizerBase
) -> None:
    call = {"id": "call-1", "type": "function", "function": {"name": "zoom", "arguments": '{"factor": 2}'}}
    messages = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call-1", "content": "zoomed in"}]  # fmt: skip
    answer = tool_client.chat.completions.create(
        model=TOOL_MODEL, messages=messages, tools=TOOLS, max_tokens=2, extra_body={"return_token_ids": True}  # type: ignore[arg-type]
    )
    prompt = tool_tokenizer.decode(answer.prompt_token_ids)  # type: ignore[attr-defined]
    templated = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [
        {**call, "function": {"name": "zoom", "arguments": {"factor": 2}}}]}, messages[2]]  # fmt: skip
    expected = tool_tokenizer.apply_chat_template(templated, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert prompt == expected
    assert '<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call>' in prompt
    assert "<tool_response>\nzoomed in\n</tool_response>" in prompt


def test_chat_logprobs_cover_every_sampled_token_whole_and_streamed(client: openai.OpenAI) -> None:
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0}
    request |= {"logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.create(**request)
    content = whole.choices[0].logprobs.content or []  # type: ignore[union-attr]
    assert whole.usage is not None and len(content) == whole.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        best = entry.top_logprobs[0]
        assert (best.token, best.logprob, best.bytes) == (entry.token, entry.logprob, entry.bytes)  # greedy
    chunks = list(client.chat.completions.create(**request, stream=True))
    streamed = [entry for c in chunks if c.choices and c.choices[0].logprobs for entry in c.choices[0].logprobs.content]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in content]
    plain = client.chat.completions.create(**{**request, "top_logprobs": 0})
    assert all(entry.top_logprobs == [] for entry in plain.choices[0].logprobs.content or [])  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**{**request, "top_logprobs": 21})
    assert raised.value.param == "top_logprobs"  # type: ignore[attr-defined]


def test_errors_come_back_as_the_clients_exceptions(client: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2)
    assert missing.value.code == "model_not_found" and "'gpt-4o' is not served here" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2, stream=True)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, temperature=-1)
    assert bad.value.param == "temperature" and bad.value.type == "invalid_request_error"  # type: ignore[attr-defined]
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError) as refused:
            stranger.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
    assert refused.value.type == "authentication_error"  # type: ignore[attr-defined]


def test_a_stream_aborted_by_a_pause_ends_with_an_error_event(
    client: openai.OpenAI, server: RunningServer
) -> None:
    stream = client.completions.create(model=MODEL, prompt="Count:", max_tokens=900, temperature=0, stream=True)
    first = next(iter(stream))
    assert first.choices[0].index == 0
    pause = httpx.post(f"{server.url}/control/pause", json={"mode": "abort"}, headers=server.control_headers)
    try:
        assert pause.status_code == 200, pause.text
        with pytest.raises(openai.APIError) as ended:
            for _ in stream:
                pass
    finally:
        httpx.post(f"{server.url}/control/resume", headers=server.control_headers).raise_for_status()
    assert ended.value.code == "aborted"  # type: ignore[attr-defined]


def test_the_async_client_streams_too(base_url: str) -> None:
    async def stream() -> list[openai.types.chat.ChatCompletionChunk]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0) as client:
            chunks = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, stream=True)
            return [chunk async for chunk in chunks]

    chunks = asyncio.run(stream())
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason is not None
