"""Fuzzing the decoder: corrupted real files end as a NormalizedImage or an ImageRejected, nothing else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ImageRejected
from foveal.renderers.images import load_image_bytes

POLICY = MultimodalConfig(max_image_pixels=4096, allowed_image_formats=["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])


def _seed(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [_seed(fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")]


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


def _decode_or_reject(data: bytes) -> None:
    try:
        result = load_image_bytes(data, POLICY)
    except ImageRejected:
        return
    assert result.width * result.height <= POLICY.max_image_pixels
    assert Image.open(io.BytesIO(result.data)).mode == "RGB"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on corrupt TIFF/EXIF tags
@settings(max_examples=200, deadline=None)
@given(corrupted())
def test_corrupted_real_images_decode_or_are_rejected(data: bytes) -> None:
    _decode_or_reject(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF", b"II*\x00"]),
    st.binary(max_size=200),
)
def test_random_bytes_behind_a_magic_number_are_rejected(magic: bytes, tail: bytes) -> None:
    _decode_or_reject(magic + tail)
