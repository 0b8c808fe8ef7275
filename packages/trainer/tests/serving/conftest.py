"""Fixtures for the inference server tests: a real server on 127.0.0.1 over the tiny Qwen2.5-VL, a client-side
renderer that writes images into the server's store, and prompts with real pillow-drawn images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from foveal.configs import MultimodalConfig
from foveal.renderers.contract import encode_mmraw
from foveal.renderers.factory import load_renderer
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server

MODEL = "tiny:qwen2_5_vl"
FAMILY = "qwen2_5_vl"
ALIAS = "my-model"
"""A second name the shared test server answers to (`[inference].served_model_name`)."""


def serve_config(root: Path, **inference: Any) -> ServeConfig:
    """A loopback server over the tiny VLM; its image store is `<root>/store`."""
    defaults = {"max_model_len": 512, "max_batch_size": 8, "request_timeout_s": 30.0, "served_model_name": [ALIAS]}
    return ServeConfig.model_validate(
        {
            "model": {"name_or_path": MODEL},
            "logging": {"run_dir": str(root / "run")},
            "multimodal": {"offload_dir": str(root / "store")},
            "inference": {**defaults, **inference},
        }
    )


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(server_root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    with start_server(serve_config(server_root), cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def client_store(server_root: Path) -> ImageStore:
    """The store a client (orchestrator) writes into: the same folder the server reads from."""
    return ImageStore(server_root / "store", MultimodalConfig(), durable=False)


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Callable[[str], Path], client_store: ImageStore) -> Renderer:
    return load_renderer(tiny_model_dir(FAMILY), store=client_store)


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def image_prompt(renderer: Renderer, text: str, *images: Image.Image) -> RenderedConversation:
    content = [*({"type": "image", "image": image} for image in images), {"type": "text", "text": text}]
    return renderer.render([{"role": "user", "content": content}], add_generation_prompt=True)


def generate_body(rendered: RenderedConversation, **sampling: Any) -> dict[str, Any]:
    """A `/v1/generate` body for a rendered prompt: its ids and one mmraw ref per image."""
    return {
        "prompt_token_ids": list(rendered.token_ids),
        "image_refs": [encode_mmraw(image.descriptor) for image in rendered.images],
        "sampling": sampling,
    }
