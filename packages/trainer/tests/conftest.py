"""Session fixtures shared by the trainer tests: every tiny model comes from `build_tiny_model`.

The cache root is a per-session temporary folder (never ~/.cache); each family is built once per session
(a fraction of a second) and loaded through the Auto classes, the way training code loads real models.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from foveal.renderers.tiny import family_spec
from foveal.trainer.tiny_models import build_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine (or under xdist) the
    spinning OpenMP workers made each forward/backward ~8x slower in wall time."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache_root: Path) -> Callable[[str], Path]:
    """family -> its model folder, built once per session."""
    return functools.cache(lambda family: build_tiny_model(family, tiny_cache_root))


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], ProcessorMixin]:
    """VLM family -> its full AutoProcessor (tokenizer, image and video processors)."""
    return functools.cache(lambda family: AutoProcessor.from_pretrained(tiny_model_dir(family)))


@pytest.fixture(scope="session")
def load_tiny_model(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], PreTrainedModel]:
    """family -> a fresh model instance (tests may train it), loaded through the Auto classes."""

    def load(family: str) -> PreTrainedModel:
        auto = AutoModelForImageTextToText if family_spec(family).is_vlm else AutoModelForCausalLM
        return auto.from_pretrained(tiny_model_dir(family))

    return load


@pytest.fixture(scope="session")
def run_two_ranks() -> Callable[..., subprocess.CompletedProcess[str]]:
    """(command, args) -> `torchrun --standalone --nproc-per-node 2 -m foveal.configs command *args`, finished.

    The production launch path on CPU (gloo). A non-zero exit fails the test with the ranks' stderr; `timeout_s`
    turns a hang (ranks waiting on each other's collectives) into a failure.
    """

    def run(command: str, args: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "foveal.configs", command, *args]  # fmt: skip
        done = subprocess.run(launch, capture_output=True, text=True, timeout=timeout_s, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    return run
