"""Model inputs in Tinker's shape: a list of token chunks and image chunks, JSON-safe both ways.

Clients that already hold token ids (Tinker-style samplers and trainers) send `ModelInput`s instead of
chat messages. Images ride inline as bytes (base64 in JSON) or as pointers to a location the store may
read; either way the renderer stores the image, computes its layout and writes the placeholder run the
family's template would (`<|vision_start|>` + placeholders + `<|vision_end|>`). If the text chunks around
an image already carry those markers (Tinker cookbook style), they are not written twice.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from foveal.renderers.errors import ImageRejected, PlaceholderMismatch, UnknownFamily
from foveal.renderers.images import stored_format
from foveal.renderers.rendered import RenderedConversation, RenderedImage

if TYPE_CHECKING:
    from foveal.renderers.families.image_refs import ImageResolver

ChunkFormat = Literal["png", "jpeg", "webp"]
"""Tinker's two formats, plus WebP: the store keeps WebP sources verbatim, so a pointer may name one."""
_CHUNK_FORMATS: dict[str, ChunkFormat] = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_CHUNK_CONFIG = ConfigDict(extra="forbid", frozen=True)


def _bytes_from_base64(value: Any) -> Any:
    """JSON carries the bytes as standard, padded base64; Python callers pass bytes directly."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as err:
        raise ValueError(f"data must be standard padded base64: {err}") from None


Base64Data = Annotated[
    bytes,
    BeforeValidator(_bytes_from_base64),
    PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), return_type=str, when_used="json"),
]


class EncodedTextChunk(BaseModel):
    """Token ids, used verbatim."""

    model_config = _CHUNK_CONFIG
    type: Literal["encoded_text"] = "encoded_text"
    tokens: tuple[int, ...]


class ImageChunk(BaseModel):
    """An encoded image inline; `expected_tokens`, if given, must equal the layout's placeholder count."""

    model_config = _CHUNK_CONFIG
    type: Literal["image"] = "image"
    data: Base64Data
    format: ChunkFormat
    expected_tokens: int | None = Field(default=None, ge=0)


class ImageAssetPointerChunk(BaseModel):
    """An image by location (`file://` URI, path or `data:` URL), read under the store's location rules."""

    model_config = _CHUNK_CONFIG
    type: Literal["image_asset_pointer"] = "image_asset_pointer"
    location: str
    format: ChunkFormat
    expected_tokens: int | None = Field(default=None, ge=0)


ModelInputChunk = Annotated[EncodedTextChunk | ImageChunk | ImageAssetPointerChunk, Field(discriminator="type")]


class ModelInput(BaseModel):
    """A sequence of chunks; `model_dump_json()` / `model_validate_json()` are the wire format."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chunks: tuple[ModelInputChunk, ...] = ()

    @classmethod
    def from_ints(cls, tokens: list[int]) -> ModelInput:
        return cls(chunks=(EncodedTextChunk(tokens=tuple(tokens)),))


class ChunkRenderer(Protocol):
    """What `render_chunks` reads of a Renderer; a protocol, so `rendering` can import this module."""

    images: ImageResolver

    @property
    def image_token_id(self) -> int | None: ...

    @property
    def vision_marker_ids(self) -> tuple[int, int] | None: ...


def render_chunks(model_input: ModelInput, renderer: ChunkRenderer) -> tuple[list[int], list[RenderedImage]]:
    """Token ids with placeholder runs expanded, and one RenderedImage per image chunk."""
    ids: list[int] = []
    images: list[RenderedImage] = []
    markers = renderer.vision_marker_ids
    for index, chunk in enumerate(model_input.chunks):
        if isinstance(chunk, EncodedTextChunk):
            ids.extend(chunk.tokens)
            continue
        field = f"chunks[{index}]"
        source = _checked_data(chunk, field) if isinstance(chunk, ImageChunk) else chunk.location
        resolved = renderer.images.resolve(source, field)
        _one_run(resolved.descriptor.payload, resolved.descriptor.family, field)
        if chunk.expected_tokens is not None and chunk.expected_tokens != resolved.num_tokens:
            expected = f"{resolved.num_tokens} (the layout of this image)"
            raise PlaceholderMismatch(f"{field}.expected_tokens", chunk.expected_tokens, expected)
        start, end = markers if markers is not None else (None, None)
        frame = markers is not None and not (ids and ids[-1] == start and _opens_with(model_input, index + 1, end))
        ids.extend([start] if frame else [])
        images.append(RenderedImage(resolved.descriptor, len(ids), resolved.num_tokens))
        ids.extend([renderer.image_token_id] * resolved.num_tokens)
        ids.extend([end] if frame else [])
    return ids, images


def to_model_input(rendered: RenderedConversation) -> ModelInput:
    """A rendered sequence as text chunks and asset pointers (markers stay in the text chunks)."""
    chunks: list[EncodedTextChunk | ImageAssetPointerChunk] = []
    position = 0
    for index, image in enumerate(rendered.images):
        _one_run(image.descriptor.payload, image.descriptor.family, f"images[{index}]")
        if image.offset > position:
            chunks.append(EncodedTextChunk(tokens=rendered.token_ids[position : image.offset]))
        uri = image.descriptor.raw_image_uri
        chunk_format = _CHUNK_FORMATS[stored_format(uri)]
        chunks.append(ImageAssetPointerChunk(location=uri, format=chunk_format, expected_tokens=image.length))
        position = image.offset + image.length
    if position < len(rendered.token_ids):
        chunks.append(EncodedTextChunk(tokens=rendered.token_ids[position:]))
    return ModelInput(chunks=tuple(chunks))


def _one_run(payload: dict[str, Any], family: str, field: str) -> None:
    """Chunks carry an image as one placeholder run; a tiled block (SmolVLM's, `placeholder_runs`) has no chunk form."""
    if "placeholder_runs" in payload:
        expected = "a family whose image is one placeholder run (a tiled block with its own tokens has no chunk form)"
        raise UnknownFamily(f"{field}.family", family, expected)


def _opens_with(model_input: ModelInput, index: int, token: int | None) -> bool:
    """Whether chunk `index` is a text chunk starting with `token`."""
    if index >= len(model_input.chunks):
        return False
    chunk = model_input.chunks[index]
    return isinstance(chunk, EncodedTextChunk) and bool(chunk.tokens) and chunk.tokens[0] == token


def _checked_data(chunk: ImageChunk, field: str) -> bytes:
    """The inline bytes, after checking the declared format against the file header (cheap, no decode)."""
    try:
        with Image.open(io.BytesIO(chunk.data)) as image:
            actual = (image.format or "").lower()
    except (UnidentifiedImageError, OSError):
        expected = "an encoded PNG, JPEG or WebP image"
        raise ImageRejected(f"{field}.data", f"<{len(chunk.data)} bytes>", expected) from None
    if {"jpeg": "jpeg", "mpo": "jpeg"}.get(actual, actual) != chunk.format:
        raise ImageRejected(f"{field}.format", chunk.format, f"the data's format ({actual or 'unknown'})")
    return chunk.data
