"""Fuzzing the decoder: corrupted real files are refused with the ImageRejected field of the stage that fails, or
decode to exactly the pixels Pillow reads from the same bytes.

`pillow_stage` walks Pillow's own public steps on the bytes (identify with the allowed plugins, the header size, the
full decode, the EXIF turn, the mode) to say which refusal the decoder owes: `image.format`, `image.size`,
`image.pixels`, `image.data`, `image.exif` or `image.mode`.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageOps

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ImageRejected
from foveal.renderers.images import load_image_bytes, xxh3_128_hex

FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]
POLICY = MultimodalConfig(max_image_pixels=4096, allowed_image_formats=FORMATS)
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error)
"""What Pillow's plugins raise on bytes they cannot read (Pillow's documentation and its plugins' sources)."""
RGB_CONVERTIBLE = {"1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "LA", "PA", "RGBa"}
SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def _seed(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [_seed(fmt) for fmt in FORMATS]


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


def _size_refusal(size: tuple[int, int]) -> str | None:
    width, height = size
    if width <= 0 or height <= 0:
        return "image.size"
    return "image.pixels" if width * height > POLICY.max_image_pixels else None


def pillow_stage(data: bytes) -> tuple[str | None, Image.Image | None]:
    """The field the first failing stage names, or (None, the upright decoded image) when every stage passes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image.pixels", None
    except PILLOW_ERRORS:
        return "image.format", None
    refusal = _size_refusal(image.size)
    if refusal:
        return refusal, None
    try:
        image.load()
    except PILLOW_ERRORS:
        return "image.data", None
    refusal = _size_refusal(image.size)  # a GIF frame may grow the canvas while loading
    if refusal:
        return refusal, None
    try:
        upright = image if image.getexif().get(ExifTags.Base.Orientation, 1) == 1 else ImageOps.exif_transpose(image)
    except PILLOW_ERRORS:
        return "image.exif", None
    if upright.mode not in RGB_CONVERTIBLE | SIXTEEN_BIT:
        return "image.mode", None
    return None, upright


def expected_rgb(image: Image.Image) -> tuple[np.ndarray, int]:
    """The RGB pixels the store must hold (16-bit samples scaled to 8 bits, transparency over white) and how far
    a value may be off: 1 where alpha compositing rounds, else 0."""
    if image.mode in SIXTEEN_BIT:
        image = Image.fromarray(np.clip(np.asarray(image.convert("I")) // 256, 0, 255).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA", "RGBa"} or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
        alpha = rgba[..., 3:] / 255
        return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8), 1
    return np.asarray(image.convert("RGB")), 0


def assert_refused_at_the_failing_stage_or_decoded_exactly(data: bytes) -> None:
    expected_field, upright = pillow_stage(data)
    if expected_field is not None:
        with pytest.raises(ImageRejected) as caught:
            load_image_bytes(data, POLICY)
        assert (type(caught.value), caught.value.field) == (ImageRejected, expected_field), caught.value
        return
    assert upright is not None
    result = load_image_bytes(data, POLICY)
    stored = Image.open(io.BytesIO(result.data))
    assert (stored.format, stored.mode, stored.size) == ("PNG", "RGB", upright.size) == ("PNG", "RGB", (result.width,
                                                                                        result.height))  # fmt: skip
    assert result.hash == xxh3_128_hex(result.data)
    pixels, tolerance = expected_rgb(upright)
    assert np.abs(np.asarray(stored).astype(int) - pixels.astype(int)).max(initial=0) <= tolerance


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on corrupt TIFF/EXIF tags
@settings(max_examples=200, deadline=None)
@given(corrupted())
def test_corrupted_real_images_are_refused_naming_the_failing_stage_or_decode_exactly(data: bytes) -> None:
    assert_refused_at_the_failing_stage_or_decoded_exactly(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF", b"II*\x00"]),
    st.binary(max_size=200),
)
def test_random_bytes_behind_a_magic_number_are_refused_naming_the_failing_stage(magic: bytes, tail: bytes) -> None:
    assert_refused_at_the_failing_stage_or_decoded_exactly(magic + tail)
