"""Turn an untrusted image location into bytes (or a PIL image), under the `[multimodal]` policy.

Accepted: a PIL image, raw bytes, a `data:image/...;base64,` URL, an absolute local path or strict
`file:///` URI inside an allowed root (the store root is always one), and http(s) URLs only when those
schemes are enabled. Everything else is a `DisallowedLocation` naming what was wrong. Local paths are
checked twice: lexically (no `..`), then after resolving symlinks against the resolved roots, and the
file actually opened is confirmed to still be inside a root.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.contract import file_uri_to_path
from foveal.renderers.errors import DisallowedLocation, ImageRejected, MissingAsset
from foveal.renderers.security.fetch import FetchPolicy, fetch_http
from foveal.renderers.security.networks import DEFAULT_BLOCKED_NETWORKS, IPNetwork
from foveal.renderers.security.urls import HTTP_SCHEMES, redact_url

ImageSource = Image.Image | bytes | bytearray | memoryview | str | os.PathLike[str]
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocationPolicy:
    """Where images may come from; build it with `from_config` so the store root is always allowed."""

    roots: tuple[Path, ...]
    schemes: frozenset[str]
    max_bytes: int
    timeout_s: float
    blocked_networks: tuple[IPNetwork, ...] = DEFAULT_BLOCKED_NETWORKS

    @classmethod
    def from_config(
        cls,
        config: MultimodalConfig,
        store_root: Path,
        blocked_networks: tuple[IPNetwork, ...] = DEFAULT_BLOCKED_NETWORKS,
    ) -> LocationPolicy:
        """Roots are resolved once here, so containment compares real paths on both sides."""
        roots = tuple(dict.fromkeys(Path(root).resolve() for root in (store_root, *config.allowed_image_roots)))
        return cls(
            roots=roots,
            schemes=frozenset(config.allowed_url_schemes),
            max_bytes=config.max_image_bytes,
            timeout_s=config.http_timeout_s,
            blocked_networks=tuple(blocked_networks),
        )

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(self.schemes, self.blocked_networks, self.max_bytes, self.timeout_s)


def describe_source(source: object) -> str:
    """Where an image came from, safe for an error: a URL without userinfo or query, a path's file name, the size
    of bytes or of a data URL, never the data itself."""
    if isinstance(source, Image.Image):
        return f"a PIL image {source.width}x{source.height}"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{len(source)} bytes"
    text = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(text, str):
        return type(source).__name__
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in HTTP_SCHEMES:
        return redact_url(text)
    if scheme == "data":
        return f"a data: URL of {len(text)} characters"
    name = Path(file_uri_to_path(text, "location") if scheme == "file" else text).name
    return f"a file named {name!r}"


def read_location(source: ImageSource, policy: LocationPolicy) -> bytes | Image.Image:
    """The encoded bytes behind `source` (or the PIL image itself), refusing disallowed locations."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, os.PathLike) and isinstance(os.fspath(source), str):
        return _read_plain_path(os.fspath(source), policy)  # a Path is always local, whatever it spells
    if isinstance(source, str):
        return _read_location_string(source, policy)
    raise DisallowedLocation("location", type(source).__name__, "a PIL image, bytes, a path or a URL")


def _read_location_string(text: str, policy: LocationPolicy) -> bytes:
    match = _SCHEME.match(text)
    if match is None:
        return _read_plain_path(text, policy)
    scheme = match.group(1).lower()
    if scheme not in policy.schemes:
        raise DisallowedLocation("location.scheme", scheme, f"one of {sorted(policy.schemes)}")
    if scheme == "file":
        return read_local_file(Path(file_uri_to_path(text, "location")), policy)
    if scheme == "data":
        return decode_data_url(text, policy.max_bytes)
    if scheme in HTTP_SCHEMES:
        return fetch_http(text, policy.fetch_policy())
    raise DisallowedLocation("location.scheme", redact_url(text), "file, data, http or https")


def _read_plain_path(text: str, policy: LocationPolicy) -> bytes:
    """A bare path is a file location, so it needs the `file` scheme like a file:// URI does."""
    if "file" not in policy.schemes:
        raise DisallowedLocation("location.scheme", "file", f"one of {sorted(policy.schemes)}")
    if "\x00" in text:
        raise DisallowedLocation("location.path", text, "a path without NUL bytes")
    return read_local_file(Path(text), policy)


def read_local_file(path: Path, policy: LocationPolicy) -> bytes:
    """Read a file that is, after resolving symlinks, inside one of the allowed roots."""
    if not path.is_absolute():
        raise DisallowedLocation("location.path", str(path), "an absolute path (relative to nothing implicit)")
    if ".." in path.parts:
        raise DisallowedLocation("location.path", str(path), "a path without '..' segments")
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise MissingAsset("location.path", str(path), "an existing file") from None
    except (OSError, RuntimeError):  # symlink loops, permission denied on a parent
        raise DisallowedLocation("location.path", str(path), "a resolvable path") from None
    require_inside(resolved, policy.roots, str(path))
    return read_regular_file(resolved, policy.max_bytes, policy.roots)


def require_inside(resolved: Path, roots: tuple[Path, ...], shown: str, field: str = "location.path") -> None:
    """Containment on resolved paths: a symlink pointing out of a root fails here."""
    if not any(resolved.is_relative_to(root) for root in roots):
        raise DisallowedLocation(field, shown, f"a file inside an allowed root {[str(r) for r in roots]}")


def read_regular_file(
    resolved: Path, max_bytes: int, roots: tuple[Path, ...], field: str = "location.path"
) -> bytes:
    """Open without following a final symlink or blocking on a FIFO, then read at most `max_bytes`.

    After opening, `/proc/self/fd` tells where the descriptor really points: if a path component was
    swapped for a symlink between the check and the open, the file is refused.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        raise MissingAsset(field, str(resolved), "an existing file") from None
    except OSError:
        raise DisallowedLocation(field, str(resolved), "a readable regular file") from None
    try:
        _check_opened(fd, resolved, max_bytes, roots, field)
        return _read_fd(fd, resolved, max_bytes)
    finally:
        os.close(fd)


def _check_opened(fd: int, resolved: Path, max_bytes: int, roots: tuple[Path, ...], field: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise DisallowedLocation(field, str(resolved), "a regular file (not a device, FIFO or folder)")
    if info.st_size > max_bytes:
        raise ImageRejected("image.bytes", info.st_size, f"at most {max_bytes} bytes")
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return  # no procfs: the resolve-then-O_NOFOLLOW check above is what we have
    require_inside(opened, roots, str(resolved), field)


def _read_fd(fd: int, resolved: Path, max_bytes: int) -> bytes:
    """Read to EOF but never past the cap, even if the file grows while we read."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, _READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise ImageRejected("image.bytes", f">{max_bytes}", f"at most {max_bytes} bytes ({resolved})")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """Bytes of a `data:image/<type>;base64,<data>` URL; the size is checked before decoding."""
    header, comma, data = url.partition(",")
    params = header[len("data:") :].lower().split(";")
    if not comma or not params[0].startswith("image/") or params[-1] != "base64":
        raise DisallowedLocation("location.data", header[:80], "data:image/<type>;base64,<data>")
    if len(data) // 4 * 3 > max_bytes + 2:
        raise ImageRejected("image.bytes", f"~{len(data) // 4 * 3}", f"at most {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DisallowedLocation("location.data", header[:80], "valid standard base64 after the comma") from None
