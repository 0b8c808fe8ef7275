"""When the store may keep an image's source bytes verbatim instead of decoding and re-encoding it.

Decoding and re-encoding every new image costs about as much as the HF processor does (benchmarks/
renderers), so a source that needs no normalization is stored as it came: a single-frame PNG, JPEG or
WebP (and allowed by the policy) whose header shows a size within the caps, no EXIF/XMP rotation, a
mode `images.to_rgb` turns into RGB the way every reader agrees on, and a file that is complete as far
as a cheap check can tell. Its readers decode it with `images.decode_stored`, which gives the very RGB
pixels the canonical path would have stored. Anything else returns None, and the store takes the
canonical path (which also gives the precise error for a bad image).

Only the header is parsed here (Pillow opens lazily); the pixel cap is checked from it, before any
decode. The completeness checks (PNG: every chunk's CRC and a final IEND; JPEG: the end-of-image
marker; WebP: the RIFF size) catch truncated files, the common corruption, so these are refused at
`put` just as before; pixel data that is corrupt inside a well-formed file is refused when a reader
decodes it (`decode_stored`).
"""

from __future__ import annotations

import struct
import zlib

from PIL import ExifTags, Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import ImageRejected
from foveal.renderers.images import DECODE_ERRORS, NormalizedImage, check_bytes, image_format, open_header
from foveal.renderers.images import xxh3_128_hex

VERBATIM_FORMATS = ("PNG", "JPEG", "WEBP")
VERBATIM_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P"})
"""Modes whose RGB meaning is plain (no colour model to interpret, no bit depth to scale); CMYK, YCbCr,
16-bit and 1-bit images take the canonical path, so every stored verbatim file reads the same anywhere."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_ROTATION_CHUNKS = frozenset({b"eXIf"})
_PNG_ROTATION_KEYWORDS = (b"XML:com.adobe.xmp\x00", b"Raw profile type exif\x00")
"""Where a PNG may carry an orientation. These chunks may follow the pixel data, which Pillow reads only
while decoding (its `getexif` on a PNG decodes the image), so the chunk walk looks for them instead."""
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_JPEG_END = b"\xff\xd9"


def verbatim_image(data: bytes, policy: MultimodalConfig) -> NormalizedImage | None:
    """The source bytes as the stored image when they need no normalization, else None.

    Raises `ImageRejected` only for what the canonical path would refuse from the header as well: too
    many bytes or too many pixels (a tiny file may claim gigapixels)."""
    check_bytes(data, policy)
    formats = [fmt for fmt in VERBATIM_FORMATS if fmt in policy.allowed_image_formats]
    try:
        image = open_header(data, policy, formats)
    except ImageRejected as error:
        if error.field == "image.pixels":
            raise
        return None  # another format (GIF, BMP, ...) or a header Pillow cannot read: the canonical path decides
    fmt = image_format(image) or ""  # one of `formats`: open_header checked it
    with image:
        plain = image.mode in VERBATIM_MODES and getattr(image, "n_frames", 1) == 1
        if not (plain and _plain_file(image, fmt, data)):
            return None
        width, height = image.size
    return NormalizedImage(width, height, data, xxh3_128_hex(data), fmt)


def _plain_file(image: Image.Image, fmt: str, data: bytes) -> bool:
    """Upright (no EXIF/XMP orientation other than 1, what `images._oriented` acts on) and complete."""
    if fmt == "PNG":
        return _png_intact_and_upright(data)
    try:
        upright = image.getexif().get(ExifTags.Base.Orientation, 1) == 1  # JPEG/WebP: parsed with the header
    except DECODE_ERRORS:
        return False  # unreadable metadata: the canonical path reports it
    if fmt == "JPEG":
        return upright and data.endswith(_JPEG_END)
    return upright and len(data) >= 12 and struct.unpack_from("<I", data, 4)[0] + 8 == len(data)  # RIFF size


def _png_intact_and_upright(data: bytes) -> bool:
    """One walk over the chunks: every CRC right, IEND last at the end of the file (a truncated PNG
    fails), and no chunk that may hold an orientation."""
    view, offset, size = memoryview(data), len(_PNG_SIGNATURE), len(data)
    while offset + 12 <= size:
        length, kind = struct.unpack_from(">I4s", data, offset)
        start, end = offset + 8, offset + 8 + length
        if end + 4 > size or zlib.crc32(view[start:end], zlib.crc32(kind)) != struct.unpack_from(">I", data, end)[0]:
            return False
        if kind in _PNG_ROTATION_CHUNKS:
            return False
        if kind in _PNG_TEXT_CHUNKS and data.startswith(_PNG_ROTATION_KEYWORDS, start, end):
            return False
        if kind == b"IEND":
            return end + 4 == size
        offset = end + 4
    return False
