"""Session fixtures of the verifiers tests: tiny tokenizers/processors built once per session, a scratch store.

Tiny processors come from `build_tiny_processor` into a per-session temporary folder (never ~/.cache).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.renderers.tiny import build_tiny_processor


@pytest.fixture(scope="session")
def tiny_processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    root = tmp_path_factory.mktemp("tiny-cache")
    return functools.cache(lambda family: build_tiny_processor(family, root))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)


@pytest.fixture
def renderer_for(tiny_processor_dir: Callable[[str], Path], store: ImageStore) -> Callable[[str], Renderer]:
    """family -> a renderer of its tiny processor, writing images to this test's store."""
    return functools.cache(lambda family: load_renderer(tiny_processor_dir(family), store=store))
