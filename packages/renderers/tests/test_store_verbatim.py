"""The store's verbatim path: plain PNG/JPEG/WebP sources are kept byte for byte, everything else is
normalized to the canonical PNG, and either way readers decode the same RGB pixels the canonical path
gives for that source."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from PIL import ExifTags, Image, ImageFile, PngImagePlugin

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.chunks import to_model_input
from foveal.renderers.errors import ImageRejected
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.images import load_image_bytes, stored_media_type
from foveal.renderers.layout import LayoutSpec, compute_layout
from foveal.renderers.store import ImageStore
from foveal.renderers.verbatim import verbatim_image

import rendering_fixtures as rf

SPEC = LayoutSpec("qwen2_vl", 14, 2, 2, min_pixels=56 * 56, max_pixels=256 * 28 * 28)


def _photo(size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    return Image.fromarray((ramp + rng.integers(0, 55, ramp.shape)).astype(np.uint8), "RGB")


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _canonical_pixels(data: bytes, policy: MultimodalConfig) -> np.ndarray:
    """What the old (always decode and re-encode) path stored for these bytes, decoded."""
    return np.asarray(Image.open(io.BytesIO(load_image_bytes(data, policy).data)))


def _rotated_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return _encoded(_photo(), "JPEG", exif=exif.tobytes())


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _png_of(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)


PLAIN = {
    "jpeg_rgb": (lambda: _encoded(_photo(), "JPEG", quality=90), "JPEG", "jpg"),
    "jpeg_l": (lambda: _encoded(_photo().convert("L"), "JPEG"), "JPEG", "jpg"),
    "jpeg_exif_upright": (lambda: _rotated_jpeg(1), "JPEG", "jpg"),
    "png_rgb": (lambda: _encoded(_photo(), "PNG"), "PNG", "png"),
    "png_l": (lambda: _encoded(_photo().convert("L"), "PNG"), "PNG", "png"),
    "png_rgba": (lambda: _encoded(_photo().convert("RGBA").rotate(20), "PNG"), "PNG", "png"),
    "png_la": (lambda: _encoded(_photo().convert("LA"), "PNG"), "PNG", "png"),
    "png_palette": (lambda: _encoded(_photo().convert("P"), "PNG"), "PNG", "png"),
    "png_palette_transparent": (lambda: _encoded(_photo().convert("P"), "PNG", transparency=3), "PNG", "png"),
    "webp_lossy": (lambda: _encoded(_photo(), "WEBP", quality=80), "WEBP", "webp"),
    "webp_rgba": (lambda: _encoded(_photo().convert("RGBA").rotate(20), "WEBP", lossless=True), "WEBP", "webp"),
}


@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_source_is_stored_verbatim_and_reads_back_as_the_old_paths_pixels(store: ImageStore, name: str) -> None:
    make, fmt, extension = PLAIN[name]
    data = make()
    stored = store.put(data)
    assert (stored.format, stored.size_bytes) == (fmt, len(data))
    assert stored.hash == xxhash.xxh3_128_hexdigest(data)
    assert stored.path == store.root / stored.hash[:2] / f"{stored.hash}.{extension}"
    assert stored.path.read_bytes() == data
    decoded = store.open_verified(stored.uri, stored.hash)
    assert decoded.mode == "RGB" and (stored.width, stored.height) == decoded.size == (40, 30)
    assert np.array_equal(np.asarray(decoded), _canonical_pixels(data, store.config))


def _exif_png(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return _encoded(_photo(), "PNG", exif=exif.tobytes())


def _xmp_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    return _encoded(_photo(), "PNG", pnginfo=info)


def _apng() -> bytes:
    return _encoded(_photo(), "PNG", save_all=True, append_images=[_photo(seed=1)])


FALLBACK = {
    "jpeg_rotated": lambda: _rotated_jpeg(6),
    "jpeg_mirrored": lambda: _rotated_jpeg(2),
    "jpeg_cmyk": lambda: _encoded(_photo().convert("CMYK"), "JPEG"),
    "png_exif_rotated": lambda: _exif_png(8),
    "png_xmp_rotated": _xmp_png,
    "png_16_bit": lambda: _encoded(Image.fromarray(np.asarray(_photo().convert("L")).astype(np.uint16) * 257), "PNG"),
    "png_1_bit": lambda: _encoded(_photo().convert("1"), "PNG"),
    "png_animated": _apng,
    "png_trailing_bytes": lambda: _encoded(_photo(), "PNG") + b"trailer",
    "gif": lambda: _encoded(_photo(), "GIF"),
    "bmp": lambda: _encoded(_photo(), "BMP"),
}


@pytest.mark.parametrize("name", list(FALLBACK))
def test_source_needing_normalization_takes_the_canonical_path(store: ImageStore, name: str) -> None:
    data = FALLBACK[name]()
    assert verbatim_image(data, store.config) is None
    stored = store.put(data)
    expected = load_image_bytes(data, store.config)
    assert (stored.format, stored.hash, stored.path.suffix) == ("PNG", expected.hash, ".png")
    assert stored.path.read_bytes() == expected.data
    decoded = np.asarray(store.open_verified(stored.uri, stored.hash))
    assert np.array_equal(decoded, _canonical_pixels(data, store.config))


def test_rotated_jpeg_is_stored_upright_with_its_turned_size(store: ImageStore) -> None:
    stored = store.put(_rotated_jpeg(6))
    assert (stored.format, stored.width, stored.height) == ("PNG", 30, 40)


def test_pil_image_is_normalized_not_kept(store: ImageStore) -> None:
    image = _photo()
    stored = store.put(image)
    assert stored.format == "PNG" and stored.hash == load_image_bytes(_encoded(image, "BMP"), store.config).hash


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (57, 3000), (333, 1024), (2048, 1536), (2600, 40)])
def test_layout_from_the_header_equals_the_layout_of_the_decoded_image(
    store: ImageStore, fmt: str, size: tuple[int, int]
) -> None:
    data = _encoded(Image.new("RGB", size, (10, 200, 30)), fmt)
    resolved = ImageResolver(store, SPEC).resolve(data, "images[0]")
    decoded = store.open_verified(resolved.descriptor.raw_image_uri, resolved.descriptor.hash)
    assert resolved.descriptor.raw_image_uri.endswith({"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[fmt])
    assert resolved.descriptor.payload == compute_layout(SPEC, *decoded.size).payload()


def test_huge_header_is_refused_before_any_pixel_is_decoded(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = _png_of(10_000, 5_000, zlib.compress(b"\x00" * 64))  # 50 Mpx (150 MB of RGB) claimed in 100 bytes

    def no_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageRejected) as caught:
        store.put(bomb)
    assert caught.value.field == "image.pixels" and caught.value.value == 50_000_000
    with pytest.raises(ImageRejected) as caught:
        verbatim_image(bomb, store.config)
    assert caught.value.field == "image.pixels"
    assert list(store.root.rglob("*.*")) == []


def test_oversized_bytes_are_refused_before_parsing(tmp_path: Path) -> None:
    policy = MultimodalConfig(max_image_bytes=100)
    with pytest.raises(ImageRejected) as caught:
        verbatim_image(_encoded(_photo(), "PNG"), policy)
    assert caught.value.field == "image.bytes"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_source_is_not_kept_verbatim_and_is_refused_at_put(store: ImageStore, fmt: str) -> None:
    data = _encoded(_photo((200, 150)), fmt)
    truncated = data[: len(data) * 2 // 3]
    assert verbatim_image(truncated, store.config) is None
    with pytest.raises(ImageRejected):
        store.put(truncated)


def _corrupt_png() -> bytes:
    """A PNG whose every chunk is well formed (right CRCs, IEND last) but whose IDAT is not zlib data."""
    return _png_of(40, 30, b"\x78\x9c" + bytes(range(7, 250)))


def test_well_formed_png_with_corrupt_pixel_data_is_refused_when_decoded(store: ImageStore) -> None:
    stored = store.put(_corrupt_png())  # the cheap checks pass: this is what a reader must catch
    assert stored.format == "PNG" and stored.path.read_bytes() == _corrupt_png()
    with pytest.raises(ImageRejected) as caught:
        store.open_verified(stored.uri, stored.hash)
    assert caught.value.field == "image.data"


def _plant(store: ImageStore, data: bytes, extension: str) -> tuple[str, str]:
    """Bytes written straight into the store under their hash (no checks), as a descriptor names them."""
    digest = xxhash.xxh3_128_hexdigest(data)
    path = store.path_for(digest, extension)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.as_uri(), digest


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_file_in_the_store_is_refused_by_readers(store: ImageStore, fmt: str) -> None:
    data = _encoded(_photo((200, 150)), fmt)
    uri, digest = _plant(store, data[: len(data) // 2], {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt])
    with pytest.raises(ImageRejected) as caught:
        store.open_verified(uri, digest)
    assert caught.value.field in ("image.data", "image.format")


def test_stored_bytes_must_be_the_format_their_name_says(store: ImageStore) -> None:
    uri, digest = _plant(store, _encoded(_photo(), "PNG"), "jpg")
    with pytest.raises(ImageRejected) as caught:
        store.open_verified(uri, digest)
    assert caught.value.field == "image.format"
    uri, digest = _plant(store, _encoded(_photo(), "GIF"), "gif")
    with pytest.raises(ImageRejected) as caught:
        store.open_verified(uri, digest)
    assert caught.value.field == "raw_image_uri"


def test_readers_apply_the_format_allow_list_again(tmp_path: Path) -> None:
    writer = ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)
    stored = writer.put(_encoded(_photo(), "WEBP"))
    reader = ImageStore(tmp_path / "assets", MultimodalConfig(allowed_image_formats=["PNG", "JPEG"]), durable=False)
    with pytest.raises(ImageRejected) as caught:
        reader.open_verified(stored.uri, stored.hash)
    assert caught.value.field == "image.format"
    with pytest.raises(ImageRejected):
        reader.put(_encoded(_photo(), "WEBP"))  # nor is it accepted as a new image


def test_readers_apply_the_pixel_cap_again(tmp_path: Path) -> None:
    writer = ImageStore(tmp_path / "assets", MultimodalConfig(), durable=False)
    stored = writer.put(_encoded(_photo(), "JPEG"))
    reader = ImageStore(tmp_path / "assets", MultimodalConfig(max_image_pixels=1000), durable=False)
    with pytest.raises(ImageRejected) as caught:
        reader.open_verified(stored.uri, stored.hash)
    assert caught.value.field == "image.pixels"


def test_media_type_and_chunk_format_follow_the_stored_format(store: ImageStore) -> None:
    for fmt, media_type in (("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")):
        stored = store.put(_encoded(_photo(), fmt))
        assert stored_media_type(stored.path.read_bytes()) == media_type
    with pytest.raises(ImageRejected):
        stored_media_type(_encoded(_photo(), "GIF"))
    renderer = rf.renderer("qwen2_5_vl")
    rendered = renderer.render([{"role": "user", "content": [{"type": "image", "image": rf.encoded(2, "JPEG")}]}])
    pointer = next(c for c in to_model_input(rendered).chunks if c.type == "image_asset_pointer")
    assert pointer.format == "jpeg" and pointer.location.endswith(".jpg")
