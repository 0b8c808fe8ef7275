"""Tools from plain functions, and ToolEnv episodes: schema, validated calls, errors the model gets to see."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from foveal.renderers.inference.wire import SamplingParams
from foveal.renderers.messages import ToolMessage, UserMessage
from foveal.renderers.rendering import Renderer
from foveal.verifiers.dataset import Dataset, Example
from foveal.verifiers.parsers import TaggedParser
from foveal.verifiers.rewards import exact_match
from foveal.verifiers.rollout import Rollout
from foveal.verifiers.rubric import Rubric
from foveal.verifiers.token_policy import TokenPolicy
from foveal.verifiers.tool_env import ToolEnv
from foveal.verifiers.tools import Tool, ToolCallFailed, ToolDefinitionError

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_scripted import ScriptedClient, replies  # noqa: E402

SAMPLING = SamplingParams(temperature=0.0, max_tokens=64)


def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Longer explanation that is not part of the description.

    Args:
        a: The first addend.
        b (int): The second addend.
    """
    return a + b


async def lookup(city: Literal["paris", "rome"], title: str | None = None) -> dict[str, object]:
    """Look a city up."""
    await asyncio.sleep(0)
    return {"city": city, "title": title, "population_millions": {"paris": 2.1, "rome": 2.8}[city]}


def test_schema_comes_from_the_signature_and_docstring() -> None:
    spec = Tool(add).spec.function
    assert spec.name == "add" and spec.description == "Add two integers."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first addend."},
            "b": {"type": "integer", "default": 0, "description": "The second addend."},
        },
        "required": ["a"],
        "additionalProperties": False,
    }
    properties = Tool(lookup).spec.function.parameters["properties"]  # type: ignore[index]
    assert properties["city"] == {"enum": ["paris", "rome"], "type": "string"}
    assert "title" in properties and "title" not in properties["title"]  # a parameter named title survives


def test_calls_are_validated_and_results_are_text() -> None:
    assert asyncio.run(Tool(add)({"a": 2, "b": 3})) == "5"
    assert asyncio.run(Tool(add)('{"a": "4"}')) == "4"  # JSON text, lax int like pydantic
    assert json.loads(asyncio.run(Tool(lookup)({"city": "rome"})))["population_millions"] == 2.8
    for arguments, message in [
        ({"b": 1}, "a: Field required"),
        ({"a": 1, "c": 2}, "c: Extra inputs are not permitted"),
        ({"a": "x"}, "a: Input should be a valid integer"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ]:
        with pytest.raises(ToolCallFailed, match=message):
            asyncio.run(Tool(add)(arguments))


def test_functions_that_cannot_be_tools_are_refused() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def variadic(*values: int) -> int:
        return sum(values)

    with pytest.raises(ToolDefinitionError, match="untyped.x"):
        Tool(untyped)
    with pytest.raises(ToolDefinitionError, match="variadic.values"):
        Tool(variadic)


def tool_env() -> ToolEnv:
    example = Example(example_id="sum", prompt=[UserMessage(content="What is 2 + 3? Use the tools.")], answer="5")
    rubric = Rubric([exact_match], parser=TaggedParser())
    return ToolEnv(name="calc", tools=[add, lookup], eval=Dataset.from_examples([example]), rubric=rubric, max_turns=4)


def call(name: str, arguments: object) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


def run(renderer: Renderer, *texts: str) -> tuple[Rollout, ScriptedClient]:
    env = tool_env()
    client = ScriptedClient(renderer, replies(*texts))
    rollout = asyncio.run(env.rollout(env.dataset("eval")[0], TokenPolicy(renderer, client), SAMPLING))
    return rollout, client


def test_tool_episode_calls_the_tool_and_feeds_back_its_result(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen3_vl")
    rollout, client = run(renderer, call("add", {"a": 2, "b": 3}), "<answer>5</answer>")
    assert rollout.stop_reason == "done" and rollout.reward == 1.0
    reply, result, final = rollout.completion
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert isinstance(result, ToolMessage) and result.content == "5" and result.name == "add"
    assert final.text() == "<answer>5</answer>"
    assert rollout.metrics == {"turns": 2.0, "tool_calls": 1.0, "tool_errors": 0.0, "exact_match": 1.0}
    first_prompt = client.requests[0][0].prompt_token_ids
    assert '"name": "add"' in renderer.tokenizer.decode(first_prompt)  # the tools preamble carries the schema
    second_prompt = renderer.tokenizer.decode(client.requests[1][0].prompt_token_ids)
    assert "<tool_response>\n5\n</tool_response>" in second_prompt


def test_bad_calls_come_back_as_errors_and_are_counted(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen3_vl")
    bad = "\n".join([call("add", {"a": "two"}), call("divide", {"a": 1}), "<tool_call>\n{oops\n</tool_call>"])
    rollout, _ = run(renderer, bad, "<answer>5</answer>")
    results = [m.text() for m in rollout.completion if m.role == "tool"]
    assert len(results) == 3
    assert "a: Input should be a valid integer" in results[0]
    assert "no tool named 'divide'" in results[1]
    assert results[2].startswith("error: the tool call could not be read")
    assert rollout.metrics["tool_calls"] == 2.0 and rollout.metrics["tool_errors"] == 3.0
    assert rollout.reward == 1.0


def test_tool_episode_stops_at_the_turn_limit(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen3_vl")
    rollout, client = run(renderer, call("add", {"a": 1}))
    assert rollout.stop_reason == "max_turns" and len(client.requests) == 4
    assert rollout.metrics["tool_calls"] == 3.0  # the 4th call is never run
