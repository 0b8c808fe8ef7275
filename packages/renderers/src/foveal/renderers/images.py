"""Decode an untrusted image once, check it, and re-encode it as the store's canonical PNG (docs/contract.md section 3).

This is the store's fallback path: source bytes that are already a plain, upright PNG/JPEG/WebP are kept
verbatim instead (`verbatim.py`), and `decode_stored` turns either kind of stored file back into the
same RGB pixels.

Checks run cheapest first: the byte size before any parsing, the format and pixel count from the header
before the pixel data is decoded (a tiny file can claim gigapixels), and only then the full decode. The
policy comes from `MultimodalConfig`; Pillow's process-wide `Image.MAX_IMAGE_PIXELS` is neither read nor
changed, though its bomb warning/error, if it fires, is turned into `ImageRejected` too.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import xxhash
from PIL import ExifTags, Image, ImageOps

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ImageRejected

PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE
"""How stored PNGs are deflated. `put` sits on the rendering hot path and encoding is most of its cost
(benchmarks/renderers): level 1 with run-length matching over Up-filtered rows encodes photos ~2.5x and
screenshots ~3x faster than Pillow's level-1 PNG, for ~15% more bytes on photos and fewer on flat
images. Readers verify the stored bytes, never re-encode, so this can change without invalidating
anything already stored (the same pixels then get a new file; old descriptors still verify)."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_UP = 2

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,  # includes "Decompressed Data Too Large" from PNG text chunks
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
"""What Pillow raises on corrupt, truncated or hostile input; anything else is a bug and propagates."""

_FORMAT_ALIASES = {"MPO": "JPEG"}
"""Pillow reports multi-picture JPEGs (common from phones) as MPO; for the allow-list they are JPEG."""

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"})
_WARNINGS_LOCK = threading.Lock()


STORED_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
"""The formats a stored file may have, and the file extension that says which one it is."""
_STORED_FORMATS = {extension: fmt for fmt, extension in STORED_EXTENSIONS.items()}


@dataclass(frozen=True)
class NormalizedImage:
    """An image as the store keeps it: its encoded bytes (`format`), their xxh3-128, and its upright size.

    The canonical path makes metadata-free RGB PNG bytes; the verbatim path keeps the source bytes."""

    width: int
    height: int
    data: bytes
    hash: str
    format: str = "PNG"

    @property
    def extension(self) -> str:
        return STORED_EXTENSIONS[self.format]


def xxh3_128_hex(data: bytes) -> str:
    """The store's content hash: 32 lowercase hex characters of xxh3-128 over the exact bytes."""
    return xxhash.xxh3_128_hexdigest(data)


def load_image_bytes(data: bytes, policy: MultimodalConfig) -> NormalizedImage:
    """Check, decode once, orient, convert to RGB and re-encode untrusted encoded image bytes."""
    check_bytes(data, policy)
    image = decode_checked(data, policy, policy.allowed_image_formats)
    return normalize_image(image, policy)


def normalize_image(image: Image.Image, policy: MultimodalConfig) -> NormalizedImage:
    """Orient, convert to RGB and encode a decoded image; the caller's image is never modified."""
    check_pixels(image.size, policy)
    try:
        oriented = _oriented(image)
    except DECODE_ERRORS as exc:
        raise ImageRejected("image.exif", type(exc).__name__, "readable EXIF metadata") from None
    rgb = to_rgb(oriented)
    png = encode_png(rgb)
    return NormalizedImage(width=rgb.width, height=rgb.height, data=png, hash=xxh3_128_hex(png))


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation; the image itself (no copy) when already upright."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def check_bytes(data: bytes, policy: MultimodalConfig) -> None:
    """Refuse encoded images over the byte cap, before any parsing."""
    if len(data) > policy.max_image_bytes:
        raise ImageRejected("image.bytes", len(data), f"at most {policy.max_image_bytes} bytes")


def check_pixels(size: tuple[int, int], policy: MultimodalConfig) -> None:
    """Refuse empty images and images over the pixel cap (the decompression-bomb guard)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageRejected("image.size", size, "a positive width and height")
    if width * height > policy.max_image_pixels:
        raise ImageRejected("image.pixels", width * height, f"at most {policy.max_image_pixels} pixels")


def decode_checked(data: bytes, policy: MultimodalConfig, formats: Sequence[str]) -> Image.Image:
    """Open with only the allowed format plugins, check the header, then decode the first frame."""
    image = open_header(data, policy, formats)
    try:
        image.load()
    except DECODE_ERRORS as exc:
        raise ImageRejected("image.data", str(exc), "a complete, decodable image") from None
    check_pixels(image.size, policy)  # a GIF frame may grow the canvas while loading
    return image


def open_header(data: bytes, policy: MultimodalConfig, formats: Sequence[str]) -> Image.Image:
    """The lazily opened image (format, size, mode, metadata; no pixels decoded), format and size checked."""
    with _bomb_warnings_as_errors():
        image = _open_header(data, formats)
    if image_format(image) not in formats:
        raise ImageRejected("image.format", image.format, f"one of {list(formats)}")
    check_pixels(image.size, policy)
    return image


def image_format(image: Image.Image) -> str | None:
    """Pillow's format name, with multi-picture JPEGs (MPO) counted as JPEG."""
    return _FORMAT_ALIASES.get(image.format or "", image.format)


def _open_header(data: bytes, formats: Sequence[str]) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("image.pixels", str(exc), "an image under the pixel cap") from None
    except DECODE_ERRORS as exc:
        raise ImageRejected("image.format", type(exc).__name__, f"a decodable image in {list(formats)}") from None


@contextmanager
def _bomb_warnings_as_errors() -> Iterator[None]:
    """Raise Pillow's DecompressionBombWarning instead of printing it, only while opening a header.

    `warnings.catch_warnings` swaps process-global filters; the lock keeps our own concurrent opens from
    restoring each other's filters out of order. It covers the header parse only, never the decode.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited over white (as the Qwen-VL processors do), 16-bit scaled to 8."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode not in _CONVERTIBLE_MODES:
        raise ImageRejected("image.mode", image.mode, f"one of {sorted(_CONVERTIBLE_MODES | _ALPHA_MODES)}")
    return image.convert("RGB")


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit samples to 8 bits (v // 256, clipped to 0..255); Pillow's plain convert to L would
    clip every value above 255 to white instead."""
    return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")


def encode_png(rgb: Image.Image) -> bytes:
    """Deterministic 8-bit RGB PNG of IHDR, one IDAT and IEND only: no ICC, EXIF, text, time or dpi.

    Written here rather than by Pillow because Pillow picks a filter per row by trying all five
    (libpng's heuristic), which is most of its encoding time on photos and cannot be turned off. Every
    row here uses the Up filter (one vectorized subtraction, mod 256 as the PNG spec defines it); zlib
    does the compression, and Pillow or any PNG decoder reads the result.
    """
    rows = np.asarray(rgb, dtype=np.uint8).reshape(rgb.height, rgb.width * 3)
    filtered = np.empty((rgb.height, 1 + rows.shape[1]), dtype=np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first is defined as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", rgb.width, rgb.height, 8, 2, 0, 0, 0)  # 8-bit truecolor, no interlace
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, PNG_STRATEGY)
    idat = deflate.compress(filtered) + deflate.flush()
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def stored_format(name: str) -> str:
    """The format a stored file's name (path or URI) says it has, from its extension."""
    extension = name.rpartition(".")[2].lower()
    if extension not in _STORED_FORMATS:
        raise ImageRejected("raw_image_uri", name, f"a stored file ending in one of {sorted(_STORED_FORMATS)}")
    return _STORED_FORMATS[extension]


def stored_media_type(data: bytes) -> str:
    """The media type of a stored file's bytes (for a `data:` URL), told from their signature."""
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    raise ImageRejected("image.format", data[:12], "the bytes of a stored PNG, JPEG or WebP file")


def decode_stored(data: bytes, policy: MultimodalConfig, fmt: str) -> Image.Image:
    """Decode bytes already verified against their hash to the RGB pixels the store's canonical path gives.

    Still checked like a new image (the format must be the one the file's name says and, unless it is the
    store's own PNG, one the policy allows; the pixel cap; a complete decode), because refs are untrusted
    and a verbatim file's pixel data is first decoded here. Verbatim files are upright by construction, so
    `to_rgb` alone gives what `normalize_image` would have stored."""
    if fmt != "PNG" and fmt not in policy.allowed_image_formats:
        raise ImageRejected("image.format", fmt, f"one of {list(policy.allowed_image_formats)}")
    return to_rgb(decode_checked(data, policy, (fmt,)))
