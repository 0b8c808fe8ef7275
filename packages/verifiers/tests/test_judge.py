"""Judge: a reward that asks a model (through any policy) whether a reply gives the reference answer."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from foveal.renderers.inference.wire import GenerateRequest
from foveal.renderers.messages import AssistantMessage, UserMessage
from foveal.renderers.rendering import Renderer
from foveal.verifiers.judge import Judge
from foveal.verifiers.rollout import Rollout
from foveal.verifiers.rubric import Rubric
from foveal.verifiers.token_policy import TokenPolicy

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_scripted import ScriptedClient  # noqa: E402


def test_judge_scores_what_the_judge_model_says(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")

    def judge_model(request: GenerateRequest, session: str | None) -> str:
        prompt = renderer.tokenizer.decode(request.prompt_token_ids)
        answer = re.search(r"Reference answer: (.*)", prompt)[1]  # type: ignore[index]
        response = re.search(r"Response: (.*)", prompt)[1]  # type: ignore[index]
        return "Yes." if answer.lower() in response.lower() else "No, it does not."

    client = ScriptedClient(renderer, judge_model)
    rubric = Rubric([Judge(TokenPolicy(renderer, client))])
    rollouts = [
        Rollout(environment="t", example_id="e", sample_index=i, prompt=(UserMessage(content="Capital of France?"),),
                completion=(AssistantMessage(content=reply),), answer="Paris")
        for i, reply in enumerate(["It is paris.", "Lyon"])
    ]  # fmt: skip
    scored = asyncio.run(rubric.score_group(rollouts))
    assert [r.reward for r in scored] == [1.0, 0.0] and scored[0].metrics == {"judge": 1.0}
    request, session = client.requests[0]
    assert "Question: Capital of France?" in renderer.tokenizer.decode(request.prompt_token_ids)
    assert request.sampling.temperature == 0.0 and (session or "").startswith("judge/")


def test_a_template_with_unknown_placeholders_is_refused_at_construction(
    renderer_for: Callable[[str], Renderer],
) -> None:
    renderer = renderer_for("qwen2_5_vl")
    with pytest.raises(KeyError, match="reference"):
        Judge(TokenPolicy(renderer, ScriptedClient(renderer, lambda r, s: "")), template="{reference}")
