"""The content-addressed image store (docs/contract.md section 3).

`put` keeps a plain PNG/JPEG/WebP's source bytes as they are (`verbatim.py`) and normalizes anything else
to a canonical PNG (`images.py`), then writes the bytes to `<root>/<hash[0:2]>/<hash>.<ext>` through a
temporary file in the same folder and `os.replace`, so a reader sees either no file or the whole file,
and concurrent writers of one image each replace it with identical bytes. `read_verified` is the only
way back in: it stays inside the root and checks the hash, because the URI and hash arrive in untrusted
refs; `open_verified` also decodes, to the same RGB pixels whichever way the file was stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.atomic_files import write_atomic
from foveal.renderers.contract import file_uri_to_path, path_to_file_uri
from foveal.renderers.errors import BadEnvelope, HashMismatch
from foveal.renderers.images import NormalizedImage, decode_stored, load_image_bytes, normalize_image, stored_format
from foveal.renderers.images import xxh3_128_hex
from foveal.renderers.locations import ImageSource, LocationPolicy, read_location, read_regular_file, require_inside
from foveal.renderers.security.networks import DEFAULT_BLOCKED_NETWORKS, IPNetwork
from foveal.renderers.verbatim import verbatim_image

_HASH = re.compile(r"[0-9a-f]{32}")
_MAX_STORED_BYTES = 1 << 31
"""Ceiling on one stored file read back (a 40-Mpixel PNG is well under it); bounds memory on bad refs."""


@dataclass(frozen=True)
class StoredImage:
    """Where `put` stored an image and what it is; `uri` and `hash` go into the raw descriptor."""

    hash: str
    uri: str
    path: Path
    width: int
    height: int
    size_bytes: int
    format: str = "PNG"
    """PNG, JPEG or WEBP: what the stored bytes are (a verbatim source's own format, else canonical PNG)."""


class ImageStore:
    """Writes checked images once, by content hash, and reads them back only after verifying the hash."""

    def __init__(
        self,
        root: Path,
        config: MultimodalConfig,
        *,
        blocked_networks: tuple[IPNetwork, ...] = DEFAULT_BLOCKED_NETWORKS,
        durable: bool = True,
    ) -> None:
        """`durable` fsyncs each new file and its folder before `put` returns: a descriptor handed out
        must not outlive its image in a crash. Turn it off only for scratch stores."""
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.durable = durable
        self.locations = LocationPolicy.from_config(config, self.root, blocked_networks)

    @classmethod
    def from_config(
        cls,
        config: MultimodalConfig,
        run_dir: Path,
        *,
        blocked_networks: tuple[IPNetwork, ...] = DEFAULT_BLOCKED_NETWORKS,
        durable: bool = True,
    ) -> ImageStore:
        """The run's store: `[multimodal].offload_dir`, else `<run dir>/assets` (never an env var)."""
        return cls(config.store_dir(run_dir), config, blocked_networks=blocked_networks, durable=durable)

    def path_for(self, hash_hex: str, extension: str = "png") -> Path:
        return self.root / hash_hex[:2] / f"{hash_hex}.{extension}"

    def put(self, source: ImageSource, accept: Callable[[int, int], object] | None = None) -> StoredImage:
        """Check and store an image (verbatim when its bytes allow, else normalized); a second put of the
        same stored bytes rewrites nothing. `accept(width, height)` runs the caller's own checks (a family's
        layout: aspect ratio, size) before anything is written, so a refused image leaves no file behind."""
        image = self.checked(source, accept)
        path = self.path_for(image.hash, image.extension)
        if not _holds(path, image.hash):
            write_atomic(path, image.data, durable=self.durable)
        return _stored(image, path)

    def checked(self, source: ImageSource, accept: Callable[[int, int], object] | None = None) -> NormalizedImage:
        """What `put` would store for `source`, after every check it makes (location, bytes, pixels, `accept`);
        nothing is written."""
        raw = read_location(source, self.locations)
        if isinstance(raw, Image.Image):
            image = normalize_image(raw, self.config)
        else:
            image = verbatim_image(raw, self.config) or load_image_bytes(raw, self.config)
        if accept is not None:
            accept(image.width, image.height)
        return image

    def read_verified(self, uri: str, expected_hash: str) -> bytes:
        """The stored bytes behind a descriptor's URI, only from inside the root and only if they hash right."""
        _check_hash_format(expected_hash)
        resolved = Path(file_uri_to_path(uri, "raw_image_uri")).resolve()
        require_inside(resolved, (self.root,), uri, "raw_image_uri")
        data = read_regular_file(resolved, _MAX_STORED_BYTES, (self.root,), "raw_image_uri")
        actual = xxh3_128_hex(data)
        if actual != expected_hash:
            raise HashMismatch("hash", expected_hash, f"stored bytes hashing to it (they hash to {actual})")
        return data

    def open_verified(self, uri: str, expected_hash: str) -> Image.Image:
        """The verified stored image decoded to RGB, checked like a new image (the ref that named it is
        untrusted, and a verbatim file's pixel data is first decoded here)."""
        data = self.read_verified(uri, expected_hash)
        return decode_stored(data, self.config, stored_format(uri))


def _holds(path: Path, hash_hex: str) -> bool:
    """True when the final file exists with the right bytes; a corrupt one (or a planted symlink, which
    `read_verified` would refuse) is rewritten, not trusted."""
    if path.is_symlink():
        return False
    try:
        return xxh3_128_hex(path.read_bytes()) == hash_hex
    except FileNotFoundError:
        return False


def _check_hash_format(expected_hash: str) -> None:
    if not (isinstance(expected_hash, str) and _HASH.fullmatch(expected_hash)):
        raise BadEnvelope("hash", expected_hash, "32 lowercase hex characters (xxh3-128)")


def _stored(image: NormalizedImage, path: Path) -> StoredImage:
    return StoredImage(
        hash=image.hash,
        uri=path_to_file_uri(path),
        path=path,
        width=image.width,
        height=image.height,
        size_bytes=len(image.data),
        format=image.format,
    )
