"""Decode-once normalization: real files made with Pillow, bombs, truncation, orientation and modes."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile, PngImagePlugin

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ImageRejected
from foveal.renderers.images import NormalizedImage, encode_png, load_image_bytes, normalize_image

POLICY = MultimodalConfig()


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pixels(result: NormalizedImage) -> np.ndarray:
    decoded = Image.open(io.BytesIO(result.data))
    assert decoded.mode == "RGB"
    return np.asarray(decoded)


def _gradient(width: int = 24, height: int = 16) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 10 % 256, y * 15 % 256, (x + y) * 7 % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def _png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header announcing any size, followed by almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_png_round_trips_pixels_and_hashes_the_stored_bytes() -> None:
    source = _gradient()
    result = load_image_bytes(_encode(source, "PNG"), POLICY)
    assert (result.width, result.height) == (24, 16)
    assert np.array_equal(_pixels(result), np.asarray(source))
    assert result.hash == xxhash.xxh3_128_hexdigest(result.data)
    assert len(result.hash) == 32


def test_same_pixels_in_any_container_give_identical_bytes_and_hash() -> None:
    source = _gradient()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made at 2026-11-22T10:00:00")
    variants = [
        _encode(source, "PNG"),
        _encode(source, "PNG", pnginfo=info, dpi=(300, 300), icc_profile=b"not really a profile"),
        _encode(source, "BMP"),
        _encode(source, "WEBP", lossless=True),
        _encode(source.convert("RGBA"), "PNG"),
    ]
    results = {load_image_bytes(data, POLICY) for data in variants}
    assert len({(r.data, r.hash) for r in results}) == 1


def test_stored_png_carries_no_metadata_chunks() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone@example.com")
    png = load_image_bytes(_encode(_gradient(), "PNG", pnginfo=info, dpi=(72, 72)), POLICY).data
    position, kinds = 8, []
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kinds.append(png[position + 4 : position + 8])
        position += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_jpeg_exif_orientation_is_applied() -> None:
    # 40x20, left half red, right half blue; orientation 6 = rotate 90 degrees clockwise to display.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    result = load_image_bytes(data, POLICY)
    assert (result.width, result.height) == (20, 40)
    out = _pixels(result).astype(int)
    assert np.abs(out[5, 10] - (255, 0, 0)).max() < 40  # the left half is now on top
    assert np.abs(out[35, 10] - (0, 0, 255)).max() < 40


def test_palette_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 1)
    for fmt in ("PNG", "GIF"):
        out = _pixels(load_image_bytes(_encode(image, fmt, transparency=1), POLICY))
        assert tuple(out[0, 0]) == (255, 255, 255), fmt
        assert tuple(out[1, 1]) == (255, 0, 0), fmt


def test_partial_alpha_is_blended_over_white() -> None:
    rgba = Image.new("RGBA", (3, 3), (255, 0, 0, 128))
    out = _pixels(load_image_bytes(_encode(rgba, "PNG"), POLICY)).astype(int)
    assert abs(out[1, 1, 0] - 255) <= 1 and abs(out[1, 1, 1] - 127) <= 1 and abs(out[1, 1, 2] - 127) <= 1


def test_gray_with_alpha_becomes_rgb() -> None:
    la = Image.new("LA", (2, 2), (0, 0))
    la.putpixel((0, 0), (10, 255))
    out = _pixels(load_image_bytes(_encode(la, "PNG"), POLICY))
    assert tuple(out[0, 0]) == (10, 10, 10)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    out = _pixels(load_image_bytes(_encode(cmyk, "JPEG", quality=95), POLICY)).astype(int)
    assert np.abs(out[4, 4] - (255, 0, 0)).max() < 40


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.array([[0, 100 * 256, 65535]], dtype=np.uint16))
    data = _encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = _pixels(load_image_bytes(data, POLICY))
    assert [tuple(p) for p in out[0]] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]


def test_float_images_are_rejected_by_mode() -> None:
    data = _encode(Image.fromarray(np.zeros((4, 4), np.float32)), "TIFF")
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(data, MultimodalConfig(allowed_image_formats=["TIFF"]))
    assert (info.value.field, info.value.value) == ("image.mode", "F")


def test_pil_input_is_normalized_without_modifying_the_callers_image() -> None:
    image = Image.new("RGBA", (5, 5), (0, 0, 255, 0))
    image.info["comment"] = "keep me"
    result = normalize_image(image, POLICY)
    assert _pixels(result)[0, 0].tolist() == [255, 255, 255]
    assert image.mode == "RGBA" and image.info == {"comment": "keep me"} and image.getpixel((0, 0)) == (0, 0, 255, 0)


def test_bytes_over_the_cap_are_rejected_before_decoding() -> None:
    garbage = b"\0" * 2048  # not an image at all: only a check that runs first can name the size
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(garbage, MultimodalConfig(max_image_bytes=1024))
    assert (info.value.field, info.value.value) == ("image.bytes", 2048)


def test_format_outside_the_allow_list_is_rejected() -> None:
    gif = _encode(Image.new("P", (4, 4)), "GIF")
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(gif, MultimodalConfig(allowed_image_formats=["PNG", "JPEG"]))
    assert info.value.field == "image.format"
    tiff = _encode(Image.new("RGB", (4, 4)), "TIFF")
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(tiff, POLICY)  # TIFF is not allowed by default
    assert info.value.field == "image.format"


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\0" * 4])
def test_unrecognised_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(data, POLICY)
    assert info.value.field in {"image.format", "image.data"}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_files_are_rejected(fmt: str) -> None:
    data = _encode(_gradient(64, 64).convert("P") if fmt == "GIF" else _gradient(64, 64), fmt)
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(data[: len(data) * 2 // 3], POLICY)
    assert info.value.field in {"image.data", "image.format"}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if pixel data is decoded: bombs must be refused from the header alone."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded before the pixel cap was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000), (7_000, 7_000)])
def test_forged_header_claiming_huge_dimensions_is_rejected_from_the_header(
    size: tuple[int, int], no_decoding: None
) -> None:
    # 10^10 px trips Pillow's own error, 10^8 its warning, 4.9*10^7 only our 40M cap: all are ImageRejected.
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageRejected) as info:
            load_image_bytes(_png_claiming(*size), POLICY)
    assert info.value.field == "image.pixels"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters_before


def test_pixel_cap_does_not_depend_on_pillows_global_limit(monkeypatch: pytest.MonkeyPatch, no_decoding: None) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(_png_claiming(100_000, 100_000), POLICY)
    assert info.value.field == "image.pixels"


def test_highly_compressed_blank_image_is_a_bomb_refused_before_decoding(no_decoding: None) -> None:
    bomb = _encode(Image.new("L", (3000, 3000)), "PNG", optimize=True)
    assert len(bomb) < 20_000  # 9 Mpixel from a few kilobytes
    with pytest.raises(ImageRejected) as info:
        load_image_bytes(bomb, MultimodalConfig(max_image_pixels=1_000_000))
    assert (info.value.field, info.value.value) == ("image.pixels", 9_000_000)


def test_pixel_cap_is_inclusive() -> None:
    policy = MultimodalConfig(max_image_pixels=100 * 100)
    assert load_image_bytes(_encode(Image.new("RGB", (100, 100)), "PNG"), policy).width == 100
    with pytest.raises(ImageRejected):
        load_image_bytes(_encode(Image.new("RGB", (100, 101)), "PNG"), policy)
    with pytest.raises(ImageRejected):
        normalize_image(Image.new("RGB", (101, 100)), policy)


def _chunks(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """(kind, data, stored crc) of every chunk after the signature."""
    position, chunks = 8, []
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind, data = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        chunks.append((kind, data, crc))
        position += 12 + length
    return chunks


@settings(max_examples=60, deadline=None, database=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.just(3))))
def test_stored_png_decodes_to_exactly_the_pixels_encoded(pixels: np.ndarray) -> None:
    png = encode_png(Image.fromarray(pixels, "RGB"))
    decoded = Image.open(io.BytesIO(png))
    assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "RGB", (pixels.shape[1], pixels.shape[0]))
    assert np.array_equal(np.asarray(decoded), pixels)


def test_stored_png_is_well_formed_8_bit_rgb_with_valid_checksums() -> None:
    png = load_image_bytes(_encode(_gradient(37, 5), "JPEG", quality=95), POLICY).data
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = _chunks(png)
    assert all(zlib.crc32(data, zlib.crc32(kind)) == crc for kind, data, crc in chunks)
    assert [kind for kind, _, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    (_, header, _), (_, idat, _), (_, end, _) = chunks
    assert struct.unpack(">IIBBBBB", header) == (37, 5, 8, 2, 0, 0, 0)  # 8-bit truecolor, no interlace
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(5, 1 + 37 * 3)
    assert set(rows[:, 0].tolist()) <= {0, 1, 2, 3, 4} and end == b""  # a PNG filter type per row

