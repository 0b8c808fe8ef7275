"""A text-only model (tiny Qwen3, tied embeddings) behind the same API: no image layout, images refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_cache_root: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("text-server")
    config = ServeConfig.model_validate(
        {
            "model": {"name_or_path": "tiny:qwen3"},
            "logging": {"run_dir": str(root)},
            "inference": {"max_model_len": 256},
        }
    )
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


def test_info_describes_a_text_model(server: RunningServer) -> None:
    info = httpx.get(f"{server.url}/v1/info").json()
    assert (info["family"], info["backend"], info["layout_fingerprint"]) == ("qwen3", "transformers", None)
    assert info["max_model_len"] == 256 and info["stop_token_ids"]


def test_tokenize_detokenize_and_generate(server: RunningServer) -> None:
    ids = httpx.post(f"{server.url}/v1/tokenize", json={"text": "hello world"}).json()["token_ids"]
    assert httpx.post(f"{server.url}/v1/detokenize", json={"token_ids": ids}).json() == {"text": "hello world"}
    body = {"prompt_token_ids": ids, "sampling": {"temperature": 0.0, "max_tokens": 5, "ignore_eos": True}}
    answer = httpx.post(f"{server.url}/v1/generate", json=body, timeout=60).json()
    assert len(answer["completions"][0]["token_ids"]) == 5 and answer["prompt_tokens"] == len(ids)


def test_image_refs_are_refused_by_a_text_model(server: RunningServer) -> None:
    body = {"prompt_token_ids": [1, 2], "image_refs": [], "sampling": {"max_tokens": 4}}
    assert httpx.post(f"{server.url}/v1/generate", json=body, timeout=60).status_code == 200
    fake = "mmraw:" + "eyJhIjoxfQ=="
    answer = httpx.post(f"{server.url}/v1/generate", json={**body, "image_refs": [fake]}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["field"].startswith("image_refs[0]")
