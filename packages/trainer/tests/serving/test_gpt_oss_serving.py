"""`foveal serve` on the tiny gpt-oss (experts, attention sinks, sliding-window layers) on the transformers backend:
chat requests are rendered by the gpt_oss family exactly as its template writes them (system and developer messages,
tools as a TypeScript namespace, a call and its result in the history), batched greedy decoding equals single
requests and the model's own `generate`, served logprobs equal the trainer's packed forward, and a sampled harmony
reply comes back as reasoning, content and OpenAI tool calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import ChatCompletionRequest, ChatCompletionResponse
from foveal.renderers.inference.wire import Completion
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.data.collate import PackSample, collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.serving.app.chat import _choice
from foveal.trainer.serving.app.chat_stream import chat_chunks
from foveal.trainer.serving.app.openai_common import AnswerHead
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.engine.requests import TokenEvent, TokenStream
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.training.loss import token_nll

from .conftest import generate_body

FAMILY = "gpt_oss"
MODEL = f"tiny:{FAMILY}"
LOGPROB_TOLERANCE = 1e-5
MAX_TOKENS = 24
TOOLS = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": {
    "type": "object", "properties": {"factor": {"type": "number"}}, "required": ["factor"]}}}]  # fmt: skip
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back."},
    {"role": "user", "content": "And goodbye?"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_cache_root: Path) -> Iterator[RunningServer]:
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(tmp_path_factory.mktemp("gpt-oss-server"))},
            "inference": {"max_model_len": 512, "max_batch_size": 8, "request_timeout_s": 60.0},
        }
    )
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Callable[[str], Path]) -> Renderer:
    return load_renderer(tiny_model_dir(FAMILY))


@pytest.fixture(scope="module")
def prompts(renderer: Renderer) -> list[RenderedConversation]:
    """Prompts of different lengths, one longer than the 64-token sliding window, one with tools."""
    long = " ".join(f"word{i}" for i in range(60))
    return [
        renderer.render(CONVERSATION, add_generation_prompt=True),
        renderer.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True),
        renderer.render([{"role": "user", "content": f"Repeat: {long}"}], add_generation_prompt=True),
        renderer.render([{"role": "user", "content": "Zoom in twice."}], TOOLS, add_generation_prompt=True),
    ]


def chat(server: RunningServer, **body: Any) -> ChatCompletionResponse:
    answer = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    return ChatCompletionResponse.model_validate(answer.json())


def post_many(server: RunningServer, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json=body) for body in bodies))

    answers = asyncio.run(run())
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    return [answer.json() for answer in answers]


def token_ids(answer: dict[str, Any]) -> list[int]:
    return answer["completions"][0]["token_ids"]


def template_ids(model_dir: Path, renderer: Renderer, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    """The gpt-oss chat template's own text (reasoning passed as `thinking`), tokenized; its clock pinned to the
    renderer's date."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    typed = renderer.adapter.template_messages(renderer.render(messages).messages)
    text = tokenizer.apply_chat_template(
        typed, tokenize=False, add_generation_prompt=True, **renderer.adapter.template_kwargs(), **kwargs
    )
    return tokenizer.encode(text, add_special_tokens=False)


def test_info_names_the_gpt_oss_family_and_its_stop_tokens(server: RunningServer, renderer: Renderer) -> None:
    info = httpx.get(f"{server.url}/v1/info").json()
    assert (info["family"], info["backend"], info["layout_fingerprint"]) == (FAMILY, "transformers", None)
    stops = {renderer.tokenizer.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>", "<|endoftext|>")}
    assert stops <= set(info["stop_token_ids"])
    assert renderer.tokenizer.convert_tokens_to_ids("<|end|>") not in info["stop_token_ids"]  # analysis goes on


def test_chat_prompt_ids_equal_the_renderer_and_the_template(
    server: RunningServer, renderer: Renderer, tiny_model_dir: Callable[[str], Path]
) -> None:
    response = chat(server, messages=CONVERSATION, max_tokens=6, temperature=0.0, return_token_ids=True)
    rendered = renderer.render(CONVERSATION, add_generation_prompt=True)
    assert list(response.prompt_token_ids or ()) == list(rendered.token_ids)
    assert list(rendered.token_ids) == template_ids(tiny_model_dir(FAMILY), renderer, CONVERSATION)
    prompt = renderer.tokenizer.decode(list(rendered.token_ids))
    assert "Greet back." not in prompt  # an earlier answer's reasoning is dropped
    assert prompt.endswith("<|start|>user<|message|>And goodbye?<|end|><|start|>assistant")
    assert 1 <= response.usage.completion_tokens <= 6


def test_tools_a_call_and_its_result_in_the_history_render_as_the_template(
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
    assert prompt_ids == template_ids(tiny_model_dir(FAMILY), renderer, history, tools=TOOLS)
    prompt = renderer.tokenizer.decode(prompt_ids)
    assert "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n// Zoom in.\n" in prompt
    assert '<|start|>assistant to=functions.zoom<|channel|>commentary json<|message|>{"factor": 2}<|call|>' in prompt
    assert '<|start|>functions.zoom to=assistant<|channel|>commentary<|message|>"zoomed"<|end|>' in prompt


def test_batched_greedy_decoding_equals_single_requests_and_the_models_own_generate(
    server: RunningServer, prompts: list[RenderedConversation], tiny_model_dir: Callable[[str], Path]
) -> None:
    bodies = [generate_body(p, temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True) for p in prompts]
    batched = post_many(server, bodies)
    assert server.backend.engine.stats.peak_batch >= 2  # the requests really shared a left-padded batch
    single = [post_many(server, [body])[0] for body in bodies]
    assert [token_ids(a) for a in batched] == [token_ids(a) for a in single]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(FAMILY)).eval()
    stops = list(server.backend.stop_token_ids)
    for prompt, answer in zip(prompts, batched, strict=True):
        ids = torch.tensor([prompt.token_ids])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS,
                             do_sample=False, eos_token_id=stops, pad_token_id=stops[0])  # fmt: skip
        assert token_ids(answer) == out[0, ids.shape[1] :].tolist()


def test_served_logprobs_equal_the_trainers_packed_forward(
    server: RunningServer, prompts: list[RenderedConversation], tiny_model_dir: Callable[[str], Path]
) -> None:
    answers = post_many(server, [generate_body(p, temperature=1.0, max_tokens=16, seed=7) for p in prompts])
    samples = []
    for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids = [*prompt.token_ids, *token_ids(answer)]
        samples.append(PackSample(f"r{index}", ids, [1.0] * len(ids)))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(FAMILY)).eval()
    batch = collate_packed(samples, position_scheme(model))
    with torch.no_grad():
        recomputed = -token_nll(packed_logits(model, batch), batch.labels)[0]
    worst = 0.0
    for start, prompt, answer in zip(batch.cu_seqlens[:-1].tolist(), prompts, answers, strict=True):
        first = start + len(prompt.token_ids) - 1
        trainer = recomputed[first : first + len(token_ids(answer))]
        worst = max(worst, float((trainer - torch.tensor(answer["completions"][0]["logprobs"])).abs().max()))
    assert worst < LOGPROB_TOLERANCE, f"max |server - trainer| logprob = {worst:.2e}"


def test_a_sampled_harmony_reply_comes_back_as_reasoning_and_an_openai_tool_call(renderer: Renderer) -> None:
    text = ("<|channel|>analysis<|message|>Zoom by two.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.zoom <|constrain|>json<|message|>{"factor": 2}<|call|>')  # fmt: skip
    ids = tuple(renderer.tokenizer.encode(text, add_special_tokens=False))
    request = ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "zoom"}], tools=TOOLS)
    completion = Completion(token_ids=ids, logprobs=(-0.5,) * len(ids), finish_reason="stop", text=text)
    choice = _choice(0, completion, renderer, request)
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls is not None
    assert choice.message.reasoning_content == "Zoom by two." and not choice.message.content
    function = choice.message.tool_calls[0].function
    assert (function.name, json.loads(function.arguments)) == ("zoom", {"factor": 2})


def test_a_streamed_harmony_reply_adds_up_to_the_whole_answer(renderer: Renderer) -> None:
    text = ("<|channel|>analysis<|message|>Say bye.<|end|><|start|>assistant<|channel|>final<|message|>"
            "Goodbye é.<|return|>")  # fmt: skip
    ids = tuple(renderer.tokenizer.encode(text, add_special_tokens=False))
    request = ChatCompletionRequest(model=MODEL, messages=CONVERSATION, stream=True)

    async def events() -> TokenStream:
        for position, token_id in enumerate(ids):
            yield TokenEvent(0, token_id, -0.5, "stop" if position == len(ids) - 1 else None)

    async def collect() -> list[Any]:
        return [chunk async for chunk in chat_chunks(events(), AnswerHead.new("chatcmpl", "m"), request, renderer, 7)]

    deltas = [chunk.choices[0].delta for chunk in asyncio.run(collect()) if chunk.choices]
    whole = _choice(0, Completion(token_ids=ids, logprobs=(-0.5,) * len(ids), finish_reason="stop", text=text),
                    renderer, request)  # fmt: skip
    assert "".join(d.content or "" for d in deltas) == whole.message.content == "Goodbye é."
    assert "".join(d.reasoning_content or "" for d in deltas) == whole.message.reasoning_content == "Say bye."
