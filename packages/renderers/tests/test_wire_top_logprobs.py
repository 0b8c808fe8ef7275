"""Alternatives on the wire: `top_logprobs` bounds in `SamplingParams` and the OpenAI requests, and a
`Completion`'s per-token (token id, logprob) pairs, absent from its JSON unless asked for."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from foveal.renderers.inference.openai import ChatCompletionRequest, CompletionRequest
from foveal.renderers.inference.wire import MAX_TOP_LOGPROBS, Completion, SamplingParams

HELLO = [{"role": "user", "content": "hi"}]


def _refused(wire_model: type[Any], field: str, **body: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        wire_model.model_validate(body)
    error = caught.value.errors()[0]
    assert error["loc"] == (field,)
    return str(error["msg"])


def test_sampling_takes_up_to_twenty_alternatives_with_logprobs() -> None:
    assert SamplingParams().top_logprobs == 0
    assert SamplingParams(top_logprobs=MAX_TOP_LOGPROBS).top_logprobs == 20
    assert "less than or equal to 20" in _refused(SamplingParams, "top_logprobs", top_logprobs=21)
    assert "greater than or equal to 0" in _refused(SamplingParams, "top_logprobs", top_logprobs=-1)
    assert "needs logprobs: true" in _refused(SamplingParams, "top_logprobs", logprobs=False, top_logprobs=2)
    assert SamplingParams(logprobs=False, top_logprobs=0).top_logprobs == 0


def test_a_completions_alternatives_are_json_pairs_and_absent_unless_asked() -> None:
    plain = Completion(token_ids=(5,), logprobs=(-0.5,), finish_reason="stop", text="x")
    assert "top_logprobs" not in plain.model_dump_json()
    asked = plain.model_copy(update={"top_logprobs": (((5, -0.5), (9, -1.25)),)})
    assert '"top_logprobs":[[[5,-0.5],[9,-1.25]]]' in asked.model_dump_json()
    assert Completion.model_validate_json(asked.model_dump_json()) == asked


def test_openai_requests_take_alternatives_within_bounds() -> None:
    chat = ChatCompletionRequest(model="m", messages=HELLO, logprobs=True, top_logprobs=20)  # type: ignore[arg-type]
    assert chat.alternatives() == 20
    assert ChatCompletionRequest(model="m", messages=HELLO, logprobs=True).alternatives() == 0  # type: ignore[arg-type]
    chat_body = {"model": "m", "messages": HELLO}
    assert "needs logprobs: true" in _refused(ChatCompletionRequest, "top_logprobs", **chat_body, top_logprobs=2)
    _refused(ChatCompletionRequest, "top_logprobs", **chat_body, logprobs=True, top_logprobs=21)
    assert CompletionRequest(model="m", prompt="hi", logprobs=5).alternatives() == 5
    assert CompletionRequest(model="m", prompt="hi", logprobs=0).alternatives() == 0
    assert CompletionRequest(model="m", prompt="hi").alternatives() == 0
    _refused(CompletionRequest, "logprobs", model="m", prompt="hi", logprobs=21)
    _refused(CompletionRequest, "logprobs", model="m", prompt="hi", logprobs=True)  # a number, not a flag
