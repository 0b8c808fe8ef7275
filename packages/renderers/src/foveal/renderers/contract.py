"""The raw image descriptor and its `mmraw:` wire ref (docs/contract.md sections 1 and 2).

A descriptor is the only thing that travels for an image: a small JSON envelope naming a stored file, its
hash, and the layout facts a family computed. Decoding is strict because refs arrive from untrusted
clients: every malformed input maps to one typed `ContractError` whose `field` is the dotted name of what
was wrong, so a server answers 4xx and keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError, field_validator

from foveal.renderers.layout.registry import family_names
from foveal.renderers.errors import (
    BadEnvelope,
    BadRefEncoding,
    ContractError,
    DisallowedLocation,
    UnknownFamily,
)

MMRAW_PREFIX = "mmraw:"
MAX_REF_CHARS = 16 * 1024
"""Refs longer than this are refused before decoding: a descriptor is a few hundred bytes."""

MAX_URI_CHARS = 4096
PROCESSED_TENSOR_KEYS = frozenset(
    {
        "pixel_values",
        "pixel_values_videos",
        "pixel_attention_mask",
        "image_embeds",
        "image_features",
        "video_embeds",
        "video_features",
        "vision_embeds",
        "vision_features",
        "inputs_embeds",
    }
)
"""Keys that mean processed pixels or embeddings; they must never ride in a descriptor (pixels are
computed only where a model consumes them)."""

_HASH = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT = re.compile(r"[0-9a-f]{8,128}")
_URI_CHARS = re.compile(r"file:///[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

_ENVELOPE_KEYS = ("kind", "version", "modality")


def known_families() -> frozenset[str]:
    """The families descriptors may name: exactly those with a layout adapter, so every reader can verify."""
    return frozenset(family_names())


def is_processed_tensor_key(key: str) -> bool:
    """True for keys that hold processed pixels/embeddings, including model-specific variants."""
    return key in PROCESSED_TENSOR_KEYS or key.startswith("pixel_values") or key.endswith("_embeds")


def file_uri_to_path(uri: str, field: str = "raw_image_uri") -> PurePosixPath:
    """The absolute path of a strict `file:///abs/path` URI; anything looser is a DisallowedLocation.

    No host (not even `localhost`), no query or fragment, no `.`/`..` segments after percent-decoding, no
    NUL: the path is later confined to a root, and these are the tricks that escape lexical checks.
    """
    if not isinstance(uri, str) or not uri.startswith("file:"):
        raise DisallowedLocation(field, uri, "a file:// URI")
    if len(uri) > MAX_URI_CHARS or not _URI_CHARS.fullmatch(uri) or _PERCENT.search(uri):
        raise DisallowedLocation(field, uri, "file:///<absolute path> with no host, query or fragment")
    try:
        path = unquote(urlsplit(uri).path, errors="strict")
    except UnicodeDecodeError:
        raise DisallowedLocation(field, uri, "percent-escapes that decode as UTF-8") from None
    parts = path.split("/")[1:]
    if "\x00" in path or any(part in ("", ".", "..") for part in parts):
        raise DisallowedLocation(field, uri, "a normalized absolute path (no '.', '..', '//' or NUL)")
    return PurePosixPath(path)


def path_to_file_uri(path: PurePosixPath) -> str:
    """`file://<absolute path>`, percent-encoded per RFC 8089 so any path round-trips through the URI."""
    return PurePosixPath(path).as_uri()


def find_processed_tensor_key(value: Any, where: str) -> str | None:
    """Dotted name of the first processed-tensor key anywhere inside `value`, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and is_processed_tensor_key(key):
                return name
            found = find_processed_tensor_key(item, name)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_processed_tensor_key(item, f"{where}.{index}")
            if found:
                return found
    return None


def _check_json_numbers(value: Any, where: str) -> None:
    """Refuse numbers canonical JSON cannot carry exactly (NaN/inf, integers beyond 64 bits)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BadEnvelope(where, value, "a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _UINT64_MAX:
        raise BadEnvelope(where, value, "an integer within 64 bits")
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in children:
        _check_json_numbers(item, f"{where}.{key}")


def _positive_int(value: Any) -> bool:
    return type(value) is int and value > 0


class RawImageDescriptor(BaseModel):
    """One stored image plus the layout facts a family computed for it (docs/contract.md section 1).

    Constructing one directly raises pydantic's ValidationError on bad input (a programming error);
    untrusted input goes through `descriptor_from_obj` or `decode_mmraw`, which raise ContractErrors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Literal["foveal.raw_image"] = "foveal.raw_image"
    version: Literal[1] = 1
    modality: Literal["image"] = "image"
    raw_image_uri: str
    hash: str
    family: str
    layout_fingerprint: str
    payload: dict[str, JsonValue]

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_an_int(cls, value: Any) -> Any:
        # Literal[1] alone accepts True and 1.0 (they compare equal); the envelope wants exactly 1.
        if type(value) is not int:
            raise BadEnvelope("version", value, "the integer 1")
        return value

    @field_validator("raw_image_uri")
    @classmethod
    def _uri_is_file(cls, value: str) -> str:
        file_uri_to_path(value)
        return value

    @field_validator("hash")
    @classmethod
    def _hash_is_xxh3_128(cls, value: str) -> str:
        if not _HASH.fullmatch(value):
            raise BadEnvelope("hash", value, "32 lowercase hex characters (xxh3-128)")
        return value

    @field_validator("family")
    @classmethod
    def _family_is_known(cls, value: str) -> str:
        if value not in known_families():
            raise UnknownFamily("family", value, f"one of {sorted(known_families())}")
        return value

    @field_validator("layout_fingerprint")
    @classmethod
    def _fingerprint_is_hex(cls, value: str) -> str:
        if not _FINGERPRINT.fullmatch(value):
            raise BadEnvelope("layout_fingerprint", value, "8-128 lowercase hex characters")
        return value

    @field_validator("payload")
    @classmethod
    def _payload_has_layout(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        tensor_key = find_processed_tensor_key(value, "payload")
        if tensor_key:
            raise BadEnvelope(tensor_key, "<tensor>", "no processed tensors in a descriptor")
        _check_json_numbers(value, "payload")
        grid = value.get("image_grid_thw")
        if not (isinstance(grid, list) and len(grid) == 3 and all(_positive_int(x) for x in grid)):
            raise BadEnvelope("payload.image_grid_thw", grid, "[t, h, w] of three positive integers")
        count = value.get("num_placeholder_tokens")
        if not _positive_int(count):
            raise BadEnvelope("payload.num_placeholder_tokens", count, "a positive integer")
        return value


def contract_error_from_validation(exc: ValidationError, prefix: str = "") -> ContractError:
    """The ContractError for the first problem pydantic found, with `field` as a dotted path.

    Errors our validators raised keep their class, re-rooted where the descriptor sits (a descriptor
    nested as `image` reports `image.family`); pydantic's own (missing, extra, wrong type or literal)
    become BadEnvelope. `prefix` adds an outer name the caller knows and pydantic does not.
    """
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, ContractError):
        field = ".".join(part for part in (prefix, *loc[:-1], inner.field) if part)
        return inner if field == inner.field else type(inner)(field, inner.value, inner.expected)
    field = ".".join(part for part in (prefix, *loc) if part) or "descriptor"
    if first["type"] == "missing":
        return BadEnvelope(field, None, "a required field")
    expected = "no extra fields" if first["type"] == "extra_forbidden" else first["msg"]
    return BadEnvelope(field, first.get("input"), expected)


def descriptor_from_obj(obj: Any) -> RawImageDescriptor:
    """Validate an untrusted decoded-JSON value as a descriptor, raising only ContractErrors."""
    if not isinstance(obj, dict):
        raise BadEnvelope("descriptor", type(obj).__name__, "a JSON object")
    tensor_key = find_processed_tensor_key(obj, "")
    if tensor_key:
        raise BadEnvelope(tensor_key, "<tensor>", "no processed tensors in a descriptor")
    for key in _ENVELOPE_KEYS:  # defaults serve Python callers; on the wire the envelope must be explicit
        if key not in obj:
            raise BadEnvelope(key, None, "a required field")
    try:
        return RawImageDescriptor.model_validate(obj)
    except ValidationError as exc:
        raise contract_error_from_validation(exc) from None


def canonical_json(desc: RawImageDescriptor) -> bytes:
    """The descriptor's canonical bytes: orjson with sorted keys, no whitespace. One descriptor, one ref."""
    return orjson.dumps(desc.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def encode_mmraw(desc: RawImageDescriptor) -> str:
    """`mmraw:` + urlsafe base64 (padded) of the canonical JSON; refuses refs a decoder would refuse."""
    ref = MMRAW_PREFIX + base64.urlsafe_b64encode(canonical_json(desc)).decode("ascii")
    if len(ref) > MAX_REF_CHARS:
        raise BadRefEncoding("ref", f"<{len(ref)} chars>", f"at most {MAX_REF_CHARS} characters")
    return ref


def _ref_body(ref: Any) -> bytes:
    """The JSON bytes inside a ref, checking prefix, size and a strict, canonical base64 alphabet."""
    if not isinstance(ref, str):
        raise BadRefEncoding("ref", type(ref).__name__, "a string")
    if len(ref) > MAX_REF_CHARS:
        raise BadRefEncoding("ref", f"<{len(ref)} chars>", f"at most {MAX_REF_CHARS} characters")
    if not ref.startswith(MMRAW_PREFIX):
        raise BadRefEncoding("ref", ref, f"a string starting with {MMRAW_PREFIX!r}")
    body = ref[len(MMRAW_PREFIX) :]
    if len(body) % 4 or not _B64URL.fullmatch(body):
        raise BadRefEncoding("ref", ref, "padded urlsafe base64 (A-Z a-z 0-9 - _ =)")
    try:
        raw = base64.urlsafe_b64decode(body)
    except binascii.Error:
        raise BadRefEncoding("ref", ref, "padded urlsafe base64") from None
    if base64.urlsafe_b64encode(raw).decode("ascii") != body:
        raise BadRefEncoding("ref", ref, "canonical base64 (zero trailing bits)")
    return raw


def decode_mmraw(ref: str) -> RawImageDescriptor:
    """Parse an untrusted `mmraw:` ref; every failure is a ContractError naming the field."""
    raw = _ref_body(ref)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRefEncoding("ref", ref, "base64 of UTF-8 JSON") from None
    desc = descriptor_from_obj(obj)
    if canonical_json(desc) != raw:
        raise BadRefEncoding("ref", ref, "canonical JSON (orjson, sorted keys, no duplicates or whitespace)")
    return desc
