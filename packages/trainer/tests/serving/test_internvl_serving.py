"""Serving the tiny InternVL 3.5 on the transformers backend: tiled images through the contract, 1-D positions in a
left-padded batch, a chat request rendered like the client, and weight updates.

The references are the model's own `generate` (with the image processor's tiles plus thumbnail, as
InternVLProcessor makes them) and the trainer's packed forward. The tiny model ties its head to its embedding (as
InternVL3.5-1B's Qwen3 decoder), so at random weights its greedy reply repeats one token, as the tiny Qwen3's does; the
sampled replies (temperature 1) are what compare the served decode positions and logprobs with the trainer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForImageTextToText, PreTrainedModel

from foveal.configs import MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.openai import ChatCompletionResponse
from foveal.renderers.inference.wire import Endpoints
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.collate import collate_packed
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.training.loss import token_nll

from .conftest import generate_body, image_prompt, picture
from .test_chat import data_url

FAMILY = "internvl"
MODEL = f"tiny:{FAMILY}"
LOGPROB_TOLERANCE = 1e-5
MAX_TOKENS = 24


def serve_config(root: Path) -> ServeConfig:
    return ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(root / "run")},
            "multimodal": {"offload_dir": str(root / "store")},
            "inference": {"max_model_len": 512, "max_batch_size": 8, "request_timeout_s": 60.0},
        }
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("internvl-server")


@pytest.fixture(scope="module")
def server(root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    with start_server(serve_config(root), cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def store(root: Path) -> ImageStore:
    return ImageStore(root / "store", MultimodalConfig(), durable=False)


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Callable[[str], Path], store: ImageStore) -> Renderer:
    return load_renderer(tiny_model_dir(FAMILY), store=store)


@pytest.fixture(scope="module")
def prompts(renderer: Renderer) -> list[RenderedConversation]:
    """Image prompts of different tile counts (11, 4, and 13 + 1 in two images) and a text-only one."""
    return [
        image_prompt(renderer, "What is it?", picture(100, 40, 1)),
        image_prompt(renderer, "Describe this tall picture in detail.", picture(30, 90, 2)),
        image_prompt(renderer, "Compare the two images.", picture(40, 130, 3), picture(20, 20, 4)),
        renderer.render([{"role": "user", "content": "Count to ten, slowly."}], add_generation_prompt=True),
    ]


def post_many(server: RunningServer, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json=body) for body in bodies))

    answers = asyncio.run(run())
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    return [answer.json() for answer in answers]


def token_ids(answer: dict[str, Any]) -> list[int]:
    return answer["completions"][0]["token_ids"]


def own_generate(
    model: PreTrainedModel, server: RunningServer, store: ImageStore, prompt: RenderedConversation
) -> list[int]:
    """The model's own greedy `generate` on the prompt, with the image processor's tiles (as InternVLProcessor runs
    it)."""
    images = [store.open_verified(i.descriptor.raw_image_uri, i.descriptor.hash) for i in prompt.images]
    processor = server.backend.materializer.adapter.image_processor
    out = processor(images=images, return_tensors="pt", crop_to_patches=True) if images else {}
    pixels = {"pixel_values": out["pixel_values"]} if images else {}
    ids = torch.tensor([prompt.token_ids])
    stops = list(server.backend.stop_token_ids)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids),
        max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=stops, pad_token_id=stops[0],
        suppress_tokens=list(server.backend.placeholder_token_ids), **pixels,
    )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


def test_batched_greedy_decoding_equals_single_requests_and_the_models_own_generate(
    server: RunningServer, prompts: list[RenderedConversation], store: ImageStore, tiny_model_dir: Callable[[str], Path]
) -> None:
    bodies = [generate_body(p, temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True) for p in prompts]
    batched = post_many(server, bodies)
    assert server.backend.engine.stats.peak_batch >= 2  # the requests really shared a left-padded batch
    single = [post_many(server, [body])[0] for body in bodies]
    assert [token_ids(a) for a in batched] == [token_ids(a) for a in single]

    reference = AutoModelForImageTextToText.from_pretrained(tiny_model_dir(FAMILY)).eval()
    for prompt, answer in zip(prompts, batched, strict=True):
        assert token_ids(answer) == own_generate(reference, server, store, prompt)


def test_served_logprobs_equal_the_trainers_packed_forward(
    server: RunningServer, prompts: list[RenderedConversation], store: ImageStore, tiny_model_dir: Callable[[str], Path]
) -> None:
    answers = post_many(server, [generate_body(p, temperature=1.0, max_tokens=16, seed=7) for p in prompts])
    folder = tiny_model_dir(FAMILY)
    materializer = Materializer.from_pretrained(folder, FAMILY, store, MultimodalConfig())
    samples = []
    for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids = (*prompt.token_ids, *token_ids(answer))
        spans = [(i.descriptor, (i.offset, i.length)) for i in prompt.images]
        refs = build_mm_refs(ids, spans, materializer.adapter.image_token_id)
        sample = TrainingSample(sample_id=f"r{index}", token_ids=ids, loss_weights=(1.0,) * len(ids), mm_refs=refs)
        samples.append(materializer.materialize(sample))
    model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="sdpa").eval()
    batch = collate_packed(samples, position_scheme(model))
    with torch.no_grad():
        recomputed = -token_nll(packed_logits(model, batch), batch.labels)[0]
    worst = 0.0
    for start, prompt, answer in zip(batch.cu_seqlens[:-1].tolist(), prompts, answers, strict=True):
        first = start + len(prompt.token_ids) - 1
        trainer = recomputed[first : first + len(token_ids(answer))]
        worst = max(worst, float((trainer - torch.tensor(answer["completions"][0]["logprobs"])).abs().max()))
    assert worst < LOGPROB_TOLERANCE, f"max |server - trainer| logprob = {worst:.2e}"


def test_chat_with_an_image_is_rendered_like_the_client_and_answered(server: RunningServer, renderer: Renderer) -> None:
    image = picture(60, 44, 9)
    content = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": "What is it?"}]
    answer = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0.0,
            "return_token_ids": True,
        },  # fmt: skip
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    response = ChatCompletionResponse.model_validate(answer.json())
    rendered = image_prompt(renderer, "What is it?", image)
    assert response.prompt_token_ids == rendered.token_ids
    image_token = server.backend.model.config.image_token_id
    assert rendered.token_ids.count(image_token) == rendered.images[0].length > 0
    assert response.usage is not None and response.usage.completion_tokens == len(response.choices[0].token_ids or ())


def test_a_weight_update_serves_exactly_the_new_internvl_weights(
    server: RunningServer, prompts: list[RenderedConversation], store: ImageStore, tmp_path: Path
) -> None:
    torch.manual_seed(5)
    new = type(server.backend.model)(server.backend.model.config).eval()
    new.save_pretrained(tmp_path / "new")
    before = post_many(server, [generate_body(prompts[2], temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)])
    control = httpx.post(
        f"{server.url}{Endpoints.UPDATE_WEIGHTS}", json={"path": str(tmp_path / "new"), "version": 3},
        headers=server.control_headers, timeout=60,
    )  # fmt: skip
    assert control.status_code == 200, control.text
    answer = post_many(server, [generate_body(prompts[2], temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)])
    assert answer[0]["weight_version"] == 3
    assert token_ids(answer[0]) == own_generate(new, server, store, prompts[2])
    # Both random models may repeat one token greedily; their probabilities of it differ.
    new_logprobs, old_logprobs = (a["completions"][0]["logprobs"] for a in (answer[0], before[0]))
    assert token_ids(answer[0]) != token_ids(before[0]) or new_logprobs != old_logprobs
    served = server.backend.model.state_dict()
    tower = "model.vision_tower.embeddings.patch_embeddings.projection.weight"
    for name in (tower, "model.multi_modal_projector.linear_1.weight"):
        assert torch.equal(served[name], new.state_dict()[name]), name
