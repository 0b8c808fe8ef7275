"""Two real inference servers (`foveal serve`, tiny VLM on CPU) behind the real router (`foveal router`),
each its own process, driven by RemoteInferenceClient.

- A weight update through the router (pause abort -> update -> resume) while plain HTTP requests are in
  flight: the router sends the aborted requests again, so the plain client sees only 200s, all on the new
  weights, and greedy outputs afterwards are exactly those of the new checkpoint loaded directly.
- Three pause(abort)/resume cycles under 64 concurrent plain HTTP clients through the router: no failed request.
- Load: 96 requests, at most 64 at once, through the router; one server is SIGKILLed mid-run and every
  request still completes exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.renderers.inference.openai import ChatCompletionRequest, ChatCompletionResponse
from foveal.renderers.inference.retry import RetryPolicy
from foveal.renderers.inference.wire import GenerateRequest, GenerateResponse, SamplingParams
from foveal.trainer.tiny_models import build_tiny_model

FAMILY = "qwen2_5_vl"
TOKEN = "fleet-t0ken-9f2c"
RETRY = RetryPolicy(max_attempts=20, initial_backoff_s=0.05, max_backoff_s=1.0, deadline_s=120)
START_TIMEOUT_S = 120


def foveal_script() -> str:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    return script


@dataclass
class Process:
    """A `foveal` subprocess and the base URL it printed once listening."""

    popen: subprocess.Popen[str]
    url: str

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)


# A server process on an OS-chosen port (`foveal serve` takes ports >= 1), through the server's public helper.
SERVE = """
import sys, threading
from foveal.configs import load_config
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import start_server
server = start_server(load_config(ServeConfig, [sys.argv[1]]))
print("serving on", server.url, flush=True)
threading.Event().wait()
"""


def spawn(command: list[str], home: Path, log: Path) -> subprocess.Popen[str]:
    """Start `command` with stderr to `log` and one torch thread (2 cores, 3 processes)."""
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def listening(popen: subprocess.Popen[str], marker: str, log: Path) -> Process:
    """Wait for the stdout line with `marker` followed by the process's base URL."""
    assert popen.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = popen.stdout.readline() if ready else ""
        if marker in line:
            return Process(popen, line.split(marker, 1)[1].split()[0])
        if not line and popen.poll() is not None:
            break
    popen.kill()
    popen.wait(timeout=30)
    tail = log.read_text(errors="replace")[-2000:]
    raise AssertionError(f"{popen.args!r} did not start (exit code {popen.returncode}):\n{tail}")


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Fleet:
    router: Process
    servers: list[Process]
    router_log: Path

    def client(self) -> RemoteInferenceClient:
        return RemoteInferenceClient(base_urls=(self.router.url,), api_token=TOKEN, retry=RETRY)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny VLM (served first) and a perturbed copy of it (the checkpoint a trainer would write next)."""
    original = build_tiny_model(FAMILY, tmp_path_factory.mktemp("tiny"))
    updated = tmp_path_factory.mktemp("updated") / "step-1"
    shutil.copytree(original, updated)
    model = AutoModelForImageTextToText.from_pretrained(original)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(updated)
    return original, updated


@pytest.fixture(scope="module")
def fleet(checkpoints: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    serve_toml = write_toml(
        root / "serve.toml",
        f'[model]\nname_or_path = "{checkpoints[0]}"\n[logging]\nrun_dir = "{root / "run"}"\n'
        f'[multimodal]\noffload_dir = "{root / "store"}"\n'
        f'[inference]\napi_token = "{TOKEN}"\ndevice = "cpu"\nmax_model_len = 3072\nmax_batch_size = 8\n',
    )
    router_toml = write_toml(
        root / "router.toml",
        f'[inference]\napi_token = "{TOKEN}"\n[inference.router]\nport = 0\nhealth_interval_s = 0.2\n',
    )
    logs = [root / "serve0.log", root / "serve1.log", root / "router.log"]
    processes = [spawn([sys.executable, "-c", SERVE, str(serve_toml)], root, log) for log in logs[:2]]
    try:
        servers = [listening(popen, "serving on ", log) for popen, log in zip(processes, logs, strict=False)]
        upstreams = [arg for server in servers for arg in ("--upstream", server.url)]
        processes.append(spawn([foveal_script(), "router", "--config", str(router_toml), *upstreams], root, logs[2]))
        router = listening(processes[2], "listening on ", logs[2])
        wait_for_health(router.url)
        yield Fleet(router, servers, logs[2])
    finally:
        for popen in processes:
            popen.kill()
            popen.wait(timeout=30)


def wait_for_health(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def text_prompt(text: str) -> tuple[int, ...]:
    return tuple(range(10, 10 + len(text)))  # plain ids inside the tiny vocabulary


def greedy(client: RemoteInferenceClient, prompts: list[tuple[int, ...]]) -> list[GenerateResponse]:
    """Greedy completions, one request at a time (batches of one, as the reference model runs)."""

    async def run() -> list[GenerateResponse]:
        async with client:
            sampling = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
            return [await client.generate(GenerateRequest(prompt_token_ids=p, sampling=sampling)) for p in prompts]

    return asyncio.run(run())


def reference_greedy(folder: Path, prompts: list[tuple[int, ...]], max_tokens: int = 12) -> list[list[int]]:
    """Greedy completions of the checkpoint at `folder`, loaded directly with transformers."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    completions = []
    for prompt in prompts:
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=None
            )
        completions.append(out[0, len(prompt) :].tolist())
    return completions


PROMPTS = [text_prompt("a" * n) for n in (5, 9, 14)]


def image_data_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_multimodal_chat_through_the_router(fleet: Fleet, checkpoints: tuple[Path, Path]) -> None:
    """An OpenAI chat request with an image goes through the router to a server and back, token ids included."""
    content = [{"type": "image_url", "image_url": {"url": image_data_url(0)}}, {"type": "text", "text": "What is it?"}]
    request = ChatCompletionRequest.model_validate(
        {"model": str(checkpoints[0]), "messages": [{"role": "user", "content": content}], "max_tokens": 8,
         "temperature": 0.0, "return_token_ids": True}
    )  # fmt: skip

    async def chat() -> ChatCompletionResponse:
        async with fleet.client() as client:
            return await client.chat_completions(request, session_id="chat-1")

    answer = asyncio.run(chat())
    assert answer.model == str(checkpoints[0]) and len(answer.choices) == 1
    assert answer.prompt_token_ids and answer.choices[0].token_ids
    assert answer.usage is not None and answer.usage.prompt_tokens == len(answer.prompt_token_ids)


def engines_in_flight(fleet: Fleet) -> int:
    """Requests the servers themselves have accepted (their /health, which needs no token)."""
    return sum(httpx.get(f"{server.url}/health", timeout=5).json()["in_flight"] for server in fleet.servers)


def test_weight_update_under_plain_http_load_loses_no_request_and_serves_the_new_checkpoint(
    fleet: Fleet, checkpoints: tuple[Path, Path]
) -> None:
    """pause(abort) ends the running requests with 503 aborted at the servers; the router sends them again, they
    wait for resume and complete on the new weights. A plain HTTP client (no retry logic) sees only 200s."""
    client = fleet.client()
    before = greedy(client, PROMPTS)
    long = {"temperature": 1.0, "max_tokens": 3000, "ignore_eos": True, "seed": 3}
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def update_under_load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fleet.router.url, headers=headers, timeout=240) as plain, client:
            bodies = [
                {"prompt_token_ids": PROMPTS[i % 3], "sampling": long, "request_id": f"long-{i}"} for i in range(8)
            ]
            tasks = asyncio.gather(*(plain.post("/v1/generate", json=body) for body in bodies))
            while await asyncio.to_thread(engines_in_flight, fleet) < len(bodies):
                await asyncio.sleep(0.02)
            await client.pause("abort")  # 8 x 3000 tokens take seconds; the pause arrives within milliseconds
            updated = await client.update_weights(str(checkpoints[1]), 1)
            assert updated.weight_version == 1
            await client.resume()
            return list(await tasks)

    responses = asyncio.run(asyncio.wait_for(update_under_load(), timeout=240))
    assert [response.status_code for response in responses] == [200] * 8
    answers = [GenerateResponse.model_validate_json(response.content) for response in responses]
    assert Counter(answer.request_id for answer in answers) == Counter(f"long-{i}" for i in range(8))
    assert all(answer.weight_version == 1 for answer in answers)  # none finished on v0
    assert all(len(answer.completions[0].token_ids) == 3000 for answer in answers)
    router_log = fleet.router_log.read_text()
    assert "aborted by a pause; sending it again" in router_log, "no running request was aborted and re-sent"
    assert TOKEN not in router_log

    after = greedy(client, PROMPTS)
    assert all(answer.weight_version == 1 for answer in after)
    assert [list(answer.completions[0].token_ids) for answer in after] == reference_greedy(checkpoints[1], PROMPTS)
    assert [a.completions[0].token_ids for a in after] != [b.completions[0].token_ids for b in before]
    assert asyncio.run(client.info()).weight_version == 1


def test_pause_cycles_under_64_plain_clients_fail_no_request(fleet: Fleet) -> None:
    """Three pause(abort)/resume cycles through the router while 64 plain HTTP clients (no retry logic) keep 160
    requests going: every request gets exactly one 200 (the router re-sends what a pause aborted)."""
    client = fleet.client()
    count, finished = 160, 0
    limit = asyncio.Semaphore(64)

    async def one(plain: httpx.AsyncClient, index: int) -> httpx.Response:
        nonlocal finished
        sampling = {"temperature": 1.0, "max_tokens": 24, "ignore_eos": True, "seed": index}
        body = {"prompt_token_ids": list(PROMPTS[index % 3]), "sampling": sampling, "request_id": f"cycle-{index}"}
        async with limit:
            answer = await plain.post("/v1/generate", json=body)
        finished += 1
        return answer

    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=fleet.router.url, headers=headers, timeout=240) as plain, client:
            tasks = asyncio.gather(*(one(plain, i) for i in range(count)))
            for cycle in range(3):
                while finished < (cycle + 1) * count // 4:
                    await asyncio.sleep(0.01)
                await client.pause("abort")
                await asyncio.sleep(0.1)
                await client.resume()
            return list(await tasks)

    resent = "aborted by a pause; sending it again"
    resent_before = fleet.router_log.read_text().count(resent)
    responses = asyncio.run(asyncio.wait_for(run(), timeout=300))
    assert [response.status_code for response in responses] == [200] * count
    ids = [GenerateResponse.model_validate_json(response.content).request_id for response in responses]
    assert Counter(ids) == Counter(f"cycle-{i}" for i in range(count))  # each exactly once
    assert fleet.router_log.read_text().count(resent) > resent_before, "no request was aborted by the cycles"


def test_killing_a_server_mid_run_loses_and_duplicates_no_request(fleet: Fleet) -> None:
    client = fleet.client()
    ids = [f"load-{i}" for i in range(96)]
    limit = asyncio.Semaphore(64)
    done: list[GenerateResponse] = []

    async def one(index: int) -> GenerateResponse:
        sampling = SamplingParams(temperature=1.0, max_tokens=16, seed=index)
        request = GenerateRequest(prompt_token_ids=PROMPTS[index % 3], sampling=sampling, request_id=ids[index])
        async with limit:
            answer = await client.generate(request, session_id=f"session-{index % 8}" if index % 2 else None)
        done.append(answer)
        return answer

    async def run() -> list[GenerateResponse]:
        async with client:
            tasks = asyncio.gather(*(one(i) for i in range(len(ids))))
            while len(done) < 16:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(fleet.servers[0].kill)
            killed_at = len(done)
            answers = list(await tasks)
            assert killed_at < len(ids), "the server was killed after the run ended"
            return answers

    answers = asyncio.run(asyncio.wait_for(run(), timeout=240))
    assert Counter(answer.request_id for answer in answers) == Counter(ids)  # each exactly once
    assert all(len(answer.completions) == 1 and answer.completions[0].token_ids for answer in answers)
    health = httpx.get(f"{fleet.router.url}/health", timeout=5)
    assert health.status_code == 200 and health.json()["in_flight"] == 0
