"""ChatPolicy against an OpenAI-compatible endpoint: a real HTTP server on 127.0.0.1 with scripted answers.

Checks what goes over the wire (messages, data: URL images, tools, tool-call ids, bearer token, no vLLM
extensions unless used) and what comes back into the rollout, including typed, redacted errors.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from foveal.renderers.inference.wire import SamplingParams
from foveal.renderers.store import ImageStore
from foveal.verifiers.chat_policy import ChatPolicy, OpenAIChatClient
from foveal.verifiers.dataset import Dataset, Example
from foveal.verifiers.datasets import generate_example
from foveal.verifiers.parsers import TaggedParser
from foveal.verifiers.rewards import exact_match
from foveal.verifiers.rollout import Rollout, RolloutError
from foveal.verifiers.rubric import Rubric
from foveal.verifiers.tool_env import ToolEnv

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_http import Endpoint, completion, running_endpoint  # noqa: E402

TOKEN = "sk-test-0123456789"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with running_endpoint() as served:
        yield served


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def run_tool_episode(endpoint: Endpoint, store: ImageStore) -> Rollout:
    scene = generate_example(0, seed=0, split="eval")
    example = Example(example_id="sum", prompt=scene.messages()[:1], answer="5")
    env = ToolEnv(
        name="calc",
        tools=[add],
        eval=Dataset.from_examples([example]),
        rubric=Rubric([exact_match], parser=TaggedParser()),
    )
    policy = ChatPolicy(OpenAIChatClient(endpoint.url, SecretStr(TOKEN)), "served-model", store)
    sampling = SamplingParams(temperature=0.5, max_tokens=40, seed=3)

    async def episode() -> Rollout:
        try:
            return await env.rollout(example, policy, sampling)
        finally:
            await policy.client.aclose()

    return asyncio.run(episode())


def test_tool_episode_over_the_chat_api(endpoint: Endpoint, store: ImageStore) -> None:
    call = {"id": "server-id", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    endpoint.answers += [
        (200, completion({"content": None, "tool_calls": [call]}, "tool_calls")),
        (200, completion({"content": "<answer>5</answer>"})),
    ]
    rollout = run_tool_episode(endpoint, store)

    assert rollout.reward == 1.0 and rollout.stop_reason == "done" and rollout.metrics["tool_calls"] == 1.0
    assert [m.role for m in rollout.completion] == ["assistant", "tool", "assistant"]
    assert rollout.completion[1].text() == "5" and not rollout.token_space
    (headers, first), (_, second) = endpoint.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}" and first["_path"] == "/v1/chat/completions"
    assert first["model"] == "served-model" and first["max_tokens"] == 40 and first["seed"] == rollout_seed(first)
    assert "top_k" not in first and "return_token_ids" not in first  # OpenAI refuses these by name
    assert first["tools"][0]["function"]["name"] == "add"
    image_part, text_part = first["messages"][0]["content"]
    (asset,) = rollout.images
    data = base64.b64decode(image_part["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert data == store.read_verified(asset.uri, asset.hash) and text_part["type"] == "text"
    assistant, tool = second["messages"][1:]
    assert assistant["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert tool == {"role": "tool", "content": "5", "tool_call_id": assistant["tool_calls"][0]["id"], "name": "add"}
    with pytest.raises(RolloutError, match="token space"):
        rollout.sequence()


def rollout_seed(request: dict[str, Any]) -> int:
    assert isinstance(request["seed"], int) and request["seed"] != 3  # derived per rollout from the run's seed
    return request["seed"]


def test_endpoint_errors_are_recorded_typed_and_redacted(endpoint: Endpoint, store: ImageStore) -> None:
    body = {"error": {"code": "invalid_request", "message": f"bad header Bearer {TOKEN}", "field": "messages"}}
    endpoint.answers.append((400, body))
    rollout = run_tool_episode(endpoint, store)
    assert rollout.reward == 0.0 and rollout.stop_reason == "error"
    (error,) = rollout.errors
    assert error.type == "InferenceError" and "HTTP 400 invalid_request (field 'messages')" in error.message
    assert TOKEN not in error.message and TOKEN not in error.traceback


def test_unreachable_endpoint_is_a_recorded_error(store: ImageStore, tmp_path: Path) -> None:
    closed = Endpoint()
    closed.server.server_close()  # nothing listens on its port any more
    rollout = run_tool_episode(closed, store)
    assert rollout.errors[0].type == "InferenceError" and "unavailable" in rollout.errors[0].message
