"""Session fixtures shared by the renderers tests: every tiny tokenizer comes from `build_tiny_processor`.

The cache root is a per-session temporary folder, so tests never read or write ~/.cache and every
pytest-xdist worker builds its own copy (half a second per family).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from foveal.renderers.tiny import build_tiny_processor


@pytest.fixture(scope="session")
def tiny_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_processor_dir(tiny_cache_root: Path) -> Callable[[str], Path]:
    """family -> its processor folder, built once per session."""
    return functools.cache(lambda family: build_tiny_processor(family, tiny_cache_root))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_processor_dir: Callable[[str], Path]) -> Callable[[str], PreTrainedTokenizerBase]:
    """family -> its tokenizer, loaded with AutoTokenizer as a user would."""
    return functools.cache(lambda family: AutoTokenizer.from_pretrained(tiny_processor_dir(family)))


@pytest.fixture(scope="session")
def tiny_image_processor(tiny_processor_dir: Callable[[str], Path]) -> Callable[[str], Qwen2VLImageProcessorPil]:
    """VLM family -> its PIL (torch-free) image processor."""
    return functools.cache(lambda family: Qwen2VLImageProcessorPil.from_pretrained(tiny_processor_dir(family)))
