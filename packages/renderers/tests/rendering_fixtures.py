"""Shared helpers of the rendering tests: tiny renderers, the HF reference, cached images, strategies.

Everything expensive is built once per process and cached: the tiny tokenizer folders, the renderers and
reference renderers, a pool of small real images (28..300 px) in every source form a message accepts, and
the HF image processor's grid per pool image (it costs ~15 ms an image, and the parity tests show the same
pool images thousands of times).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from foveal.configs.multimodal import MultimodalConfig
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from foveal.renderers.factory import load_renderer
from foveal.renderers.families.reference import ReferenceRenderer, to_pil
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.renderers.tiny import build_tiny_processor

PARITY = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PARITY_GENERIC = settings(PARITY, max_examples=150)
"""The generic family only drives the template; its own risk is the image expansion."""
IMAGE_SIZES = ((28, 28), (29, 300), (300, 29), (64, 48), (100, 100), (123, 77), (224, 224), (300, 300), (37, 211))
SOURCE_KINDS = ("pil", "png_bytes", "jpeg_bytes", "data_url", "path", "file_uri")
NEEDS_TORCH = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="this family's HF processor imports torch; foveal-renderers itself does not (the workspace run has it)",
)
"""For parity checks against an HF processor whose module imports torch (GLM-4.1V's image processor, InternVL's
processor): skipped only in the renderers' isolated run, which proves the renderer works without torch."""


@functools.cache
def scratch_dir() -> Path:
    """One temporary folder per test process: the image store and the image files live under it."""
    return Path(tempfile.mkdtemp(prefix="foveal-render-tests-"))


@functools.cache
def store() -> ImageStore:
    files = scratch_dir() / "files"
    files.mkdir(exist_ok=True)
    config = MultimodalConfig(allowed_image_roots=[files])
    return ImageStore(scratch_dir() / "assets", config, durable=False)


@functools.cache
def renderer(source: str, family: str | None = None, **options: Any) -> Renderer:
    """A renderer for a tiny family (`source` like "qwen2_5_vl"), loaded the way users load one."""
    return load_renderer(build_tiny_processor(source), store=store(), family=family, **options)


@functools.cache
def reference(source: str, family: str | None = None, **options: Any) -> ReferenceRenderer:
    """The apply_chat_template + HF image processor oracle, with its own tokenizer instance."""
    from transformers import AutoImageProcessor, AutoTokenizer

    folder = build_tiny_processor(source)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    adapter = renderer(source, family, **options).adapter
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil") if adapter.layout_family else None
    cached = None if processor is None else CachedImageProcessor(processor)
    return ReferenceRenderer(tokenizer, cached, adapter, load_image=_load_pool_image)


@functools.cache
def gemma3_processor() -> Any:
    """The tiny gemma3 folder's full Gemma3Processor, loaded with AutoProcessor as users load it."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_processor("gemma3"))


@functools.cache
def glm4v_processor() -> Any:
    """The tiny glm4v folder's full Glm4vProcessor, loaded with AutoProcessor as users load it."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_processor("glm4v"))


def load_pool_image(source: Any) -> Image.Image:
    """A message's image source opened as the reference renderers open it (memoized)."""
    return _load_pool_image(source)


def _load_pool_image(source: Any) -> Image.Image:
    """`to_pil`, memoized per source: the pool's sources are a few dozen objects shown thousands of times."""
    key = (type(source).__name__, id(source) if isinstance(source, Image.Image) else source)
    if key not in _LOADED:
        _LOADED[key] = to_pil(source)
    return _LOADED[key]


_LOADED: dict[tuple[str, Any], Image.Image] = {}


class CachedImageProcessor:
    """The real HF image processor, run once per distinct image (keyed by its pixels)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.merge_size = processor.merge_size
        self._grids: dict[tuple[tuple[int, int], bytes], np.ndarray] = {}

    def __call__(self, images: list[Image.Image], return_tensors: str) -> dict[str, np.ndarray]:
        grids = [self._grid(image, return_tensors) for image in images]
        return {"image_grid_thw": np.stack(grids)}

    def _grid(self, image: Image.Image, return_tensors: str) -> np.ndarray:
        key = (image.size, image.tobytes())
        if key not in self._grids:
            self._grids[key] = self.processor(images=[image], return_tensors=return_tensors)["image_grid_thw"][0]
        return self._grids[key]


@functools.cache
def pool_image(index: int) -> Image.Image:
    """Pool image `index`: seeded noise over a gradient, so every image hashes differently."""
    width, height = IMAGE_SIZES[index]
    rng = np.random.default_rng(index)
    gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    pixels = (gradient * 0.5 + rng.integers(0, 128, (height, width, 3))).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@functools.cache
def encoded(index: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    pool_image(index).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@functools.cache
def image_source(index: int, kind: str) -> Any:
    """Pool image `index` in one of the source forms of SOURCE_KINDS."""
    if kind == "pil":
        return pool_image(index)
    if kind in ("png_bytes", "jpeg_bytes"):
        return encoded(index, "PNG" if kind == "png_bytes" else "JPEG")
    if kind == "data_url":
        return "data:image/png;base64," + base64.b64encode(encoded(index, "PNG")).decode("ascii")
    path = _image_file(index)
    return str(path) if kind == "path" else path.as_uri()


@functools.cache
def _image_file(index: int) -> Path:
    path = scratch_dir() / "files" / f"pool-{index}.png"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(encoded(index, "PNG"))
    return path


IMAGE_PARTS = st.builds(
    lambda i, kind: {"type": "image", "image": image_source(i, kind)},
    st.integers(0, len(IMAGE_SIZES) - 1),
    st.sampled_from(SOURCE_KINDS),
)
"""An image part: any pool image, in any accepted source form."""


EDGE_TEXTS = (
    "",
    " ",
    "\n",
    "\n\n",
    "  two leading spaces",
    "trailing newline\n",
    "\nleading newline",
    "emoji 😀👍🏽 and flags 🇫🇷",
    "中文字符与日本語のテキスト",
    "tab\tcarriage\r\nreturn",
    "combining e\u0301 vs \u00e9",
    "zero\u200bwidth",
    "مرحبا بالعالم",
    '{"json": [1, 2.5, null]}',
    "<b>markup</b> & entities &amp;",
    "   ",
    "a" * 120,
)


TEXTS = st.one_of(
    st.sampled_from(EDGE_TEXTS),
    st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40),
).filter(lambda text: "<|" not in text)
"""Edge-case strings half the time, arbitrary unicode text otherwise (built once: strategies are costly).

Never `<|...|>` special-token markup: hypothesis also draws string constants it finds in the code under test
(such as "<|image_pad|>"), and the renderer refuses placeholder tokens inside message text by design
(`test_render.py::test_placeholder_tokens_inside_text_are_refused`)."""


@functools.cache
def internvl_processor() -> Any:
    """The tiny internvl folder's full InternVLProcessor, loaded with AutoProcessor as users load it."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_processor("internvl"))


@functools.cache
def smolvlm_processor() -> Any:
    """The tiny smolvlm folder's full SmolVLMProcessor, loaded with AutoProcessor as users load it."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_processor("smolvlm"))
