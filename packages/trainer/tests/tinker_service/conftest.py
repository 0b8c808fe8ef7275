"""A running Tinker service on 127.0.0.1 (OS-chosen port) over the tiny Qwen2.5-VL, and shapes datums.

The service runs in this process on a uvicorn thread (`ServerThread`), stopped by the fixture; clients are
the real `tinker` SDK talking HTTP to it, or httpx for wire-level checks.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from foveal.configs import LoggingConfig, ModelConfig, MultimodalConfig
from foveal.configs.tinker_service import TinkerServiceConfig, TinkerServiceSection
from foveal.trainer.serving.server import ServerThread, bind_socket
from foveal.trainer.tinker_service import TinkerService, create_app
from foveal.verifiers.datasets.shapes import ShapesSpec, generate_example

API_KEY = "tml-foveal-test-key-0123456789"
SHAPES = ShapesSpec(image_size=56, min_shapes=1, max_shapes=1)


@dataclass(frozen=True)
class RunningService:
    url: str
    service: TinkerService
    model_dir: Path
    allowed_root: Path


@pytest.fixture
def tinker_service(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningService]:
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    allowed = tmp_path / "images"
    allowed.mkdir()
    model_dir = tiny_model_dir("qwen2_5_vl")
    config = TinkerServiceConfig(
        model=ModelConfig(name_or_path=str(model_dir)),
        multimodal=MultimodalConfig(allowed_image_roots=[allowed]),
        logging=LoggingConfig(run_dir=tmp_path / "run"),
        tinker=TinkerServiceSection(
            port=0, device="cpu", micro_batch_tokens=512, max_model_len=512, max_request_bytes=2 * 2**20, future_wait_s=5
        ),
    )
    service = TinkerService(config)
    thread = ServerThread(create_app(service, API_KEY), bind_socket("127.0.0.1", 0))
    thread.start()
    try:
        yield RunningService(f"http://127.0.0.1:{thread.port}", service, model_dir, allowed)
    finally:
        thread.stop()
        service.close()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shape_example(index: int) -> tuple[bytes, str]:
    """PNG bytes of one single-shape scene and the shape's name (the class to predict)."""
    example = generate_example(index, seed=7, spec=SHAPES)
    return png_bytes(example.image), example.shapes[0].kind
