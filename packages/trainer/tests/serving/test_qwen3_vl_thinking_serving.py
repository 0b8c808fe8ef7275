"""Serving the tiny Qwen3-VL Thinking on the transformers backend: the Qwen3-VL model under the thinking template.

The server renders a chat request's generation prompt with the opened `<think>` block, exactly as the client's
renderer does, and parses each reply as starting inside that block: OpenAI's `message.reasoning_content` holds the
reasoning and `message.content` the answer, whole and streamed. To get a reply with a known split from a real
forward pass, the served weights are replaced (through the weight-update route) by a scripted model: its layers
write nothing into the residual stream, so each position's logits depend on its own token only, and its embedding
and head make greedy decoding follow one chain of tokens: `\\n` (the prompt's last token) -> the reasoning ->
`</think>` -> the answer -> `<|im_end|>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForImageTextToText

from foveal.configs import MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import ChatCompletionResponse
from foveal.renderers.inference.wire import Endpoints
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server

from .conftest import image_prompt, picture
from .test_chat import data_url

FAMILY = "qwen3_vl_thinking"
MODEL = f"tiny:{FAMILY}"
REASONING, ANSWER = "It looks red", "Red."


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qwen3-vl-thinking-server")


@pytest.fixture(scope="module")
def server(root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(root / "run")},
            "multimodal": {"offload_dir": str(root / "store")},
            "inference": {"max_model_len": 512, "max_batch_size": 4, "request_timeout_s": 60.0},
        }
    )
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Callable[[str], Path], root: Path) -> Renderer:
    return load_renderer(tiny_model_dir(FAMILY), store=ImageStore(root / "store", MultimodalConfig(), durable=False))


def chat(server: RunningServer, **body: Any) -> ChatCompletionResponse:
    answer = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    return ChatCompletionResponse.model_validate(answer.json())


def streamed_deltas(server: RunningServer, body: dict[str, Any]) -> tuple[str, str]:
    """The streamed reasoning and content deltas of one choice, each joined."""
    reasoning, content = [], []
    request = {"model": MODEL, **body, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=request, timeout=60) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line.removeprefix("data: "))["choices"]:
                    reasoning.append(choice["delta"].get("reasoning_content") or "")
                    content.append(choice["delta"].get("content") or "")
    return "".join(reasoning), "".join(content)


def test_an_image_chat_is_rendered_with_the_opened_think_block_and_its_reply_parsed_as_reasoning(
    server: RunningServer, renderer: Renderer
) -> None:
    image = picture(60, 44, 9)
    content = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": "What is it?"}]
    response = chat(server, messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0.0,
                    return_token_ids=True)  # fmt: skip
    rendered = image_prompt(renderer, "What is it?", image)
    assert response.prompt_token_ids == rendered.token_ids
    think = renderer.tokenizer.convert_tokens_to_ids("<think>")
    assert list(rendered.token_ids[-2:]) == [think, *renderer.tokenizer.encode("\n", add_special_tokens=False)]
    assert rendered.token_ids.count(server.backend.model.config.image_token_id) == rendered.images[0].length > 0
    (choice,) = response.choices
    expected = renderer.parse_completion(choice.token_ids or ())
    assert (choice.message.reasoning_content, choice.message.content) == (expected.reasoning_content, expected.text())


def scripted_model(folder: Path, chain: list[int], out: Path) -> None:
    """The tiny model with every layer's output projections zeroed and an embedding/head pair that maps token
    chain[i] to chain[i + 1] (logit 80 against 0 for every other token)."""
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    text = model.model.language_model
    hidden = text.config.hidden_size
    assert len(chain) <= hidden and len(set(chain[:-1])) == len(chain) - 1
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        text.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for index, (token, following) in enumerate(zip(chain, chain[1:])):
            text.embed_tokens.weight[token, index] = 1.0
            model.lm_head.weight[following, index] = 10.0
    model.save_pretrained(out)


def test_a_reply_is_split_into_reasoning_and_content_whole_and_streamed(
    server: RunningServer, renderer: Renderer, tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    encode = renderer.tokenizer.encode
    newline, close, end = encode("\n")[-1], *renderer.tokenizer.convert_tokens_to_ids(["</think>", "<|im_end|>"])
    chain = [newline, *encode(REASONING), close, *encode(ANSWER), end]
    scripted_model(tiny_model_dir(FAMILY), chain, tmp_path / "scripted")
    control = httpx.post(
        f"{server.url}{Endpoints.UPDATE_WEIGHTS}", json={"path": str(tmp_path / "scripted"), "version": 1},
        headers=server.control_headers, timeout=60,
    )  # fmt: skip
    assert control.status_code == 200, control.text

    body = {"messages": [{"role": "user", "content": "What color is it?"}], "max_tokens": 32, "temperature": 0.0}
    response = chat(server, **body, return_token_ids=True)
    (choice,) = response.choices
    assert list(choice.token_ids or ()) == chain[1:]  # the reply starts inside the prompt's <think> block
    assert (choice.message.reasoning_content, choice.message.content) == (REASONING, ANSWER)
    assert choice.finish_reason == "stop" and response.weight_version == 1
    assert streamed_deltas(server, body) == (REASONING, ANSWER)

    cut = chat(server, **{**body, "max_tokens": 2}).choices[0]  # the budget runs out inside the block
    assert (cut.message.reasoning_content, cut.message.content, cut.finish_reason) == (
        renderer.tokenizer.decode(chain[1:3]),
        "",
        "length",
    )
