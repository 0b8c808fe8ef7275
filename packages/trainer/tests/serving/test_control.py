"""The control plane over HTTP: tokens, the three pause modes, resume, weight updates and the prompt cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.configs.trainer import CheckpointConfig, OptimConfig, ScheduleConfig
from foveal.renderers.inference.wire import Endpoints
from foveal.renderers.rendering import Renderer
from foveal.trainer.training.checkpoint import Checkpointer, TrainingState
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.training.optim import build_optimizer, build_scheduler

from .conftest import FAMILY, serve_config

CONTROL = (Endpoints.PAUSE, Endpoints.RESUME, Endpoints.UPDATE_WEIGHTS, Endpoints.RESET_PREFIX_CACHE)
QUEUE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(server_root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    """A server whose queued requests give up after QUEUE_TIMEOUT_S."""
    config = serve_config(server_root, request_timeout_s=QUEUE_TIMEOUT_S)
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


@pytest.fixture(scope="module")
def prompt(renderer: Renderer) -> list[int]:
    return list(renderer.render([{"role": "user", "content": "Tell a story."}], add_generation_prompt=True).token_ids)


def control(server: RunningServer, endpoint: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}{endpoint}", json=body or {}, headers=server.control_headers, timeout=60)


def long_request(prompt: list[int], max_tokens: int = 400, seed: int = 0) -> dict[str, Any]:
    sampling = {"temperature": 1.0, "max_tokens": max_tokens, "ignore_eos": True, "seed": seed}
    return {"prompt_token_ids": prompt, "sampling": sampling}


def post_in_background(pool: ThreadPoolExecutor, server: RunningServer, body: dict[str, Any]) -> Future[httpx.Response]:
    return pool.submit(httpx.post, f"{server.url}/v1/generate", json=body, timeout=60)


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def decoding(server: RunningServer, rows: int) -> Callable[[], bool]:
    """True once `rows` sequences are in the running batch."""
    return lambda: len(server.backend.engine.batch) >= rows


def assert_healthy(server: RunningServer, state: str = "serving") -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["state"] == state


@pytest.mark.parametrize("endpoint", CONTROL)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer"])
def test_control_endpoints_refuse_a_missing_or_wrong_token(
    server: RunningServer, endpoint: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    body = {"path": "/nonexistent", "version": 1} if endpoint == Endpoints.UPDATE_WEIGHTS else {}
    answer = httpx.post(f"{server.url}{endpoint}", json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert server.token not in answer.text
    assert_healthy(server)


def test_abort_ends_in_flight_requests_with_503_aborted_and_resume_serves_again(
    server: RunningServer, pool: ThreadPoolExecutor, prompt: list[int]
) -> None:
    pending = [post_in_background(pool, server, long_request(prompt, seed=i)) for i in range(3)]
    wait_until(decoding(server, 3))
    paused = control(server, Endpoints.PAUSE, {"mode": "abort"})
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    for future in pending:
        answer = future.result(30)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "aborted"
    assert control(server, Endpoints.RESUME).json()["state"] == "serving"
    again = httpx.post(f"{server.url}/v1/generate", json=long_request(prompt, max_tokens=5), timeout=60)
    assert again.status_code == 200 and len(again.json()["completions"][0]["token_ids"]) == 5


def test_wait_lets_in_flight_requests_finish_before_pausing(
    server: RunningServer, pool: ThreadPoolExecutor, prompt: list[int]
) -> None:
    pending = [post_in_background(pool, server, long_request(prompt, max_tokens=120, seed=i)) for i in range(2)]
    wait_until(decoding(server, 2))
    paused = control(server, Endpoints.PAUSE, {"mode": "wait"})
    assert paused.json() == {"state": "paused", "weight_version": server.backend.engine.weight_version, "in_flight": 0}
    for future in pending:
        answer = future.result(1)  # already answered when the pause returned
        assert answer.status_code == 200 and len(answer.json()["completions"][0]["token_ids"]) == 120
    control(server, Endpoints.RESUME)


def test_keep_freezes_in_flight_requests_and_resume_finishes_them_unchanged(
    server: RunningServer, pool: ThreadPoolExecutor, prompt: list[int]
) -> None:
    body = long_request(prompt, max_tokens=200, seed=42)
    uninterrupted = httpx.post(f"{server.url}/v1/generate", json=body, timeout=60).json()
    pending = post_in_background(pool, server, body)
    wait_until(decoding(server, 1))
    paused = control(server, Endpoints.PAUSE, {"mode": "keep"}).json()
    assert paused["state"] == "paused" and paused["in_flight"] == 1
    steps = server.backend.engine.stats.decode_steps
    time.sleep(0.3)
    assert not pending.done() and server.backend.engine.stats.decode_steps == steps
    assert_healthy(server, "paused")
    control(server, Endpoints.RESUME)
    resumed = pending.result(30).json()
    assert resumed["completions"][0]["token_ids"] == uninterrupted["completions"][0]["token_ids"]


def test_requests_sent_while_paused_wait_for_resume_or_time_out_as_unavailable(
    server: RunningServer, pool: ThreadPoolExecutor, prompt: list[int]
) -> None:
    control(server, Endpoints.PAUSE, {"mode": "wait"})
    timed_out = post_in_background(pool, server, long_request(prompt, max_tokens=4))
    answer = timed_out.result(QUEUE_TIMEOUT_S + 10)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"

    waiting = post_in_background(pool, server, long_request(prompt, max_tokens=4))
    time.sleep(0.3)
    assert not waiting.done()
    control(server, Endpoints.RESUME)
    assert waiting.result(30).status_code == 200


def test_reset_prefix_cache_empties_the_prompt_cache(server: RunningServer, prompt: list[int]) -> None:
    httpx.post(f"{server.url}/v1/generate", json=long_request(prompt, max_tokens=2), timeout=60)
    assert len(server.backend.engine.prompt_cache) > 0
    answer = control(server, Endpoints.RESET_PREFIX_CACHE)
    assert answer.status_code == 200 and answer.json()["state"] == "serving"
    assert len(server.backend.engine.prompt_cache) == 0


@pytest.fixture(scope="module")
def new_checkpoint(tiny_model_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by the trainer's Checkpointer after one large optimizer step."""
    model_dir = tiny_model_dir(FAMILY)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).train()
    optimizer = build_optimizer(model, OptimConfig(lr=5e-2))
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup_steps=0), total_steps=10)
    ids = torch.arange(40).view(1, -1)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    single = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    checkpointer = Checkpointer(tmp_path_factory.mktemp("ckpt"), CheckpointConfig(), single)
    return checkpointer.save(
        model, AutoProcessor.from_pretrained(model_dir), optimizer, scheduler, TrainingState(step=1)
    )


def greedy_with_logprobs(server: RunningServer, prompt: list[int]) -> dict[str, Any]:
    body = {"prompt_token_ids": prompt, "sampling": {"temperature": 0.0, "max_tokens": 16, "ignore_eos": True}}
    answer = httpx.post(f"{server.url}/v1/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_update_weights_serves_exactly_the_new_checkpoint(
    server: RunningServer, prompt: list[int], new_checkpoint: Path
) -> None:
    before = greedy_with_logprobs(server, prompt)
    answer = control(server, Endpoints.UPDATE_WEIGHTS, {"path": str(new_checkpoint), "version": 7})
    assert answer.status_code == 200, answer.text
    assert answer.json()["weight_version"] == 7
    after = greedy_with_logprobs(server, prompt)
    assert after["weight_version"] == 7
    completion = after["completions"][0]

    reference = AutoModelForImageTextToText.from_pretrained(new_checkpoint).eval()
    ids = torch.tensor([prompt])
    expected = reference.generate(input_ids=ids, max_new_tokens=16, do_sample=False, eos_token_id=None)[
        0, len(prompt) :
    ]
    assert completion["token_ids"] == expected.tolist()
    assert completion["token_ids"] != before["completions"][0]["token_ids"]
    with torch.no_grad():
        logits = reference(input_ids=torch.cat([ids[0], expected]).view(1, -1)).logits[0].float()
    recomputed = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1].gather(1, expected.view(-1, 1))[:, 0]
    assert (recomputed - torch.tensor(completion["logprobs"])).abs().max() < 1e-5


def test_a_bad_checkpoint_is_refused_and_the_served_weights_stay(
    server: RunningServer, prompt: list[int], new_checkpoint: Path, tmp_path: Path
) -> None:
    before = greedy_with_logprobs(server, prompt)
    version = before["weight_version"]
    state = {k: v.clone() for k, v in AutoModelForImageTextToText.from_pretrained(new_checkpoint).state_dict().items()}
    from safetensors.torch import save_file

    wrong_shape = tmp_path / "wrong_shape"
    wrong_shape.mkdir()
    state["lm_head.weight"] = state["lm_head.weight"][:-1]
    save_file({k: v.contiguous() for k, v in state.items()}, wrong_shape / "model.safetensors")
    missing = tmp_path / "missing_key"
    missing.mkdir()
    save_file({k: v.contiguous() for k, v in list(state.items())[1:]}, missing / "model.safetensors")
    not_safetensors = tmp_path / "garbage"
    not_safetensors.mkdir()
    (not_safetensors / "model.safetensors").write_bytes(b"\x00" * 64)

    cases = {wrong_shape: "lm_head.weight", missing: "weights[", not_safetensors: "path", tmp_path / "nope": "path"}
    for folder, field in cases.items():
        answer = control(server, Endpoints.UPDATE_WEIGHTS, {"path": str(folder), "version": version + 1})
        assert answer.status_code == 422, answer.text
        assert field in answer.json()["error"]["field"]
    after = greedy_with_logprobs(server, prompt)
    assert after["weight_version"] == version
    assert after["completions"] == before["completions"]
    assert_healthy(server)
