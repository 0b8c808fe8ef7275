"""`/v1/generate` on the tiny Qwen2.5-VL: batching equals single requests and the model's own `generate`,
logprobs equal the trainer's recomputation, and the sampling settings do what they say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs import MultimodalConfig
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.collate import collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.serving.testing import RunningServer
from foveal.trainer.training.loss import token_nll
from foveal.trainer.model.forward import packed_logits

from .conftest import FAMILY, generate_body, image_prompt, picture

LOGPROB_TOLERANCE = 1e-5
"""fp32 on CPU: the server's cached, batched, left-padded decode against the trainer's packed forward."""


@pytest.fixture(scope="module")
def prompts(renderer: Renderer) -> list[RenderedConversation]:
    """Prompts of different lengths: two with one image, one with two images, two text-only."""
    return [
        image_prompt(renderer, "What is in this picture?", picture(64, 48, 1)),
        image_prompt(renderer, "Describe.", picture(40, 90, 2)),
        image_prompt(renderer, "Compare the two images, please, in detail.", picture(56, 56, 3), picture(30, 70, 4)),
        renderer.render([{"role": "user", "content": "Hello there"}], add_generation_prompt=True),
        renderer.render(
            [{"role": "user", "content": "Count to ten, slowly and carefully."}], add_generation_prompt=True
        ),
    ]


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir: Callable[[str], Path]) -> torch.nn.Module:
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir(FAMILY)).eval()


def post_many(server: RunningServer, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST all bodies at once (concurrently), as an RL orchestrator does."""

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            answers = await asyncio.gather(*(client.post("/v1/generate", json=body) for body in bodies))
        assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
        return [answer.json() for answer in answers]

    return asyncio.run(run())


def generate(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/v1/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def tokens(answer: dict[str, Any], index: int = 0) -> list[int]:
    return answer["completions"][index]["token_ids"]


def test_batched_greedy_decoding_equals_single_requests_and_model_generate(
    server: RunningServer,
    prompts: list[RenderedConversation],
    reference_model: torch.nn.Module,
    client_store: ImageStore,
) -> None:
    bodies = [generate_body(p, temperature=0.0, max_tokens=24) for p in prompts]
    peak_before = server.backend.engine.stats.peak_batch
    batched = post_many(server, bodies)
    assert server.backend.engine.stats.peak_batch >= 2 or peak_before >= 2  # the requests really shared a batch
    single = [generate(server, body) for body in bodies]
    assert [tokens(a) for a in batched] == [tokens(a) for a in single]

    processor = AutoProcessor.from_pretrained(Path(server.backend.model.name_or_path))
    stops = list(server.backend.stop_token_ids)
    for prompt, answer in zip(prompts, batched, strict=True):
        images = [client_store.open_verified(i.descriptor.raw_image_uri, i.descriptor.hash) for i in prompt.images]
        pixels = processor.image_processor(images=images, return_tensors="pt") if images else {}
        ids = torch.tensor([prompt.token_ids])
        out = reference_model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
            eos_token_id=stops, pad_token_id=stops[0], suppress_tokens=list(server.backend.placeholder_token_ids),
            **pixels,
        )  # fmt: skip
        expected = out[0, ids.shape[1] :].tolist()
        got = tokens(answer)
        assert got == expected[: len(got)]
        assert answer["completions"][0]["finish_reason"] == ("stop" if got[-1] in stops else "length")


def test_logprobs_equal_the_trainers_recomputed_logprobs(
    server: RunningServer,
    prompts: list[RenderedConversation],
    reference_model: torch.nn.Module,
    client_store: ImageStore,
) -> None:
    answers = post_many(server, [generate_body(p, temperature=1.0, max_tokens=16, seed=7) for p in prompts[:3]])
    folder = Path(server.backend.model.name_or_path)
    materializer = Materializer.from_pretrained(folder, "qwen2_vl", client_store, MultimodalConfig())
    samples = []
    for index, (prompt, answer) in enumerate(zip(prompts[:3], answers, strict=True)):
        completion = answer["completions"][0]
        ids = (*prompt.token_ids, *completion["token_ids"])
        refs = build_mm_refs(
            ids, [(i.descriptor, (i.offset, i.length)) for i in prompt.images], materializer.adapter.image_token_id
        )
        logprobs = (0.0,) * len(prompt.token_ids) + tuple(completion["logprobs"])
        sample = TrainingSample(
            sample_id=f"rollout-{index}", token_ids=ids, loss_weights=(1.0,) * len(ids),
            inference_logprobs=logprobs, mm_refs=tuple(refs),
        )  # fmt: skip
        samples.append(materializer.materialize(sample))
    batch = collate_packed(samples, position_scheme(reference_model))
    with torch.no_grad():
        recomputed = -token_nll(packed_logits(reference_model, batch), batch.labels)[0]
    starts = batch.cu_seqlens[:-1].tolist()
    worst = 0.0
    for start, prompt, answer in zip(starts, prompts, answers, strict=False):
        completion = answer["completions"][0]
        first = start + len(prompt.token_ids) - 1  # the position that predicts the first sampled token
        trainer = recomputed[first : first + len(completion["token_ids"])]
        worst = max(worst, float((trainer - torch.tensor(completion["logprobs"])).abs().max()))
    assert worst < LOGPROB_TOLERANCE, f"max |server - trainer| logprob = {worst:.2e}"


def test_a_seed_reproduces_its_samples_and_n_samples_differ(server: RunningServer, prompts: list[Any]) -> None:
    body = generate_body(prompts[0], temperature=1.0, max_tokens=12, seed=123, n=4)
    first, again = generate(server, body), generate(server, body)
    assert [tokens(first, i) for i in range(4)] == [tokens(again, i) for i in range(4)]
    assert len({tuple(tokens(first, i)) for i in range(4)}) == 4
    other = generate(server, generate_body(prompts[0], temperature=1.0, max_tokens=12, seed=124, n=4))
    assert tokens(other) != tokens(first)


def test_top_k_one_and_a_tiny_top_p_sample_the_greedy_tokens(server: RunningServer, prompts: list[Any]) -> None:
    greedy = tokens(generate(server, generate_body(prompts[3], temperature=0.0, max_tokens=10)))
    top_k = generate(server, generate_body(prompts[3], temperature=1.5, top_k=1, max_tokens=10, seed=1))
    top_p = generate(server, generate_body(prompts[3], temperature=1.5, top_p=1e-6, max_tokens=10, seed=2))
    assert tokens(top_k)[: len(greedy)] == greedy[: len(tokens(top_k))]
    assert tokens(top_p)[: len(greedy)] == greedy[: len(tokens(top_p))]


def test_stop_strings_and_stop_tokens_end_the_completion_and_stay_in_it(
    server: RunningServer, prompts: list[Any]
) -> None:
    free = generate(server, generate_body(prompts[4], temperature=0.0, max_tokens=20, ignore_eos=True))
    ids, text = tokens(free), free["completions"][0]["text"]
    assert len(ids) == 20 and free["completions"][0]["finish_reason"] == "length"
    cut = 5
    body = generate_body(prompts[4], temperature=0.0, max_tokens=20, ignore_eos=True, stop_token_ids=[ids[cut]])
    stop_token = generate(server, body)
    assert tokens(stop_token) == ids[: ids.index(ids[cut]) + 1]
    assert stop_token["completions"][0]["finish_reason"] == "stop"

    decoded = server.backend.tokenizer.decode(ids[: cut + 1])
    stop_string = decoded[-3:]
    stopped = generate(
        server, generate_body(prompts[4], temperature=0.0, max_tokens=20, ignore_eos=True, stop=[stop_string])
    )
    completion = stopped["completions"][0]
    assert completion["finish_reason"] == "stop"
    assert stop_string in completion["text"] and text.startswith(completion["text"])
    assert stop_string not in server.backend.tokenizer.decode(tokens(stopped)[:-1])


def test_max_tokens_ends_with_length_and_logprobs_can_be_left_out(server: RunningServer, prompts: list[Any]) -> None:
    answer = generate(server, generate_body(prompts[3], temperature=1.0, max_tokens=3, logprobs=False, ignore_eos=True))
    completion = answer["completions"][0]
    assert completion["logprobs"] is None
    assert len(completion["token_ids"]) == 3 and completion["finish_reason"] == "length"
    assert answer["prompt_tokens"] == len(prompts[3].token_ids)


def test_a_repeated_prompt_reuses_its_prefill(server: RunningServer, prompts: list[Any]) -> None:
    stats = server.backend.engine.stats
    body = generate_body(prompts[1], temperature=0.0, max_tokens=4)
    first = generate(server, body)
    hits = stats.prompt_cache_hits
    assert tokens(generate(server, body)) == tokens(first)
    assert stats.prompt_cache_hits == hits + 1
