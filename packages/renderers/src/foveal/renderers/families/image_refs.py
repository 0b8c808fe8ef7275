"""Image part -> stored file + raw descriptor + placeholder count, the only place a renderer touches pixels.

New images go through `ImageStore.put` (header checks, then the source bytes verbatim or a canonical PNG,
de-duplication, location rules) and the family's pure layout math. Decoding and re-encoding, where still
needed, dominate rendering cost, and the same image is rendered again and again (epochs, RL groups of
rollouts per prompt), so results are cached by the xxh3-128 of the exact source bytes (or pixels): the
location rules still run on every call, only the store work for content already stored is skipped. An
already-stored descriptor is trusted only as far as it can be checked cheaply: its file must verify
against its hash, and the layout recomputed from the stored image's size under this renderer's spec
must equal the descriptor's payload.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xxhash
from PIL import Image

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import ContractError, FingerprintMismatch, PlaceholderMismatch, UnknownFamily
from foveal.renderers.images import open_header, stored_format
from foveal.renderers.layout import AnyLayoutSpec, compute_layout
from foveal.renderers.locations import describe_source, read_location
from foveal.renderers.store import ImageStore, StoredImage


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """A stored image's descriptor and how many placeholder tokens its layout needs."""

    descriptor: RawImageDescriptor
    num_tokens: int


class ImageResolver:
    """Stores images and computes their layout under one spec; `spec=None` means a text-only renderer."""

    def __init__(self, store: ImageStore | None, spec: AnyLayoutSpec | None, cache_size: int = 4096) -> None:
        self.store = store
        self.spec = spec
        self._stored: OrderedDict[str, StoredImage] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # guards only the dict; puts of one image race harmlessly

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for spawned workers: the cache and its lock stay behind."""
        return {"store": self.store, "spec": self.spec, "cache_size": self._cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["spec"], state["cache_size"])  # type: ignore[misc]

    def resolve(self, source: Any, field: str) -> ResolvedImage:
        """The descriptor for any accepted image source; `field` names it in errors."""
        store, spec = self._require(field)
        if isinstance(source, RawImageDescriptor):
            return self._check_stored(source, store, spec, field)
        try:
            stored = self._put(store, source, lambda width, height: compute_layout(spec, width, height))
        except ContractError as error:
            raise located(error, field, source) from None
        layout = compute_layout(spec, stored.width, stored.height)
        descriptor = RawImageDescriptor(
            raw_image_uri=stored.uri,
            hash=stored.hash,
            family=spec.family,
            layout_fingerprint=spec.fingerprint,
            payload=layout.payload(),
        )
        return ResolvedImage(descriptor, layout.num_placeholder_tokens)

    def _put(self, store: ImageStore, source: Any, accept: Callable[[int, int], object]) -> StoredImage:
        """`store.put` (with the layout check before any write), skipped when these exact bytes (or pixels) were
        stored before and are still there."""
        raw = read_location(source, store.locations)  # the location rules run on every call
        key = _content_key(raw)
        with self._lock:
            stored = self._stored.get(key)
        if stored is not None and stored.path.is_file():
            return stored
        stored = store.put(raw, accept)
        with self._lock:
            self._stored[key] = stored
            if len(self._stored) > self._cache_size:
                self._stored.popitem(last=False)
        return stored

    def _require(self, field: str) -> tuple[ImageStore, AnyLayoutSpec]:
        if self.spec is None:
            raise UnknownFamily(field, "<image>", "a renderer with an image layout (this one is text-only)")
        if self.store is None:
            raise UnknownFamily(field, "<image>", "a renderer built with an ImageStore")
        return self.store, self.spec

    def _check_stored(
        self, descriptor: RawImageDescriptor, store: ImageStore, spec: AnyLayoutSpec, field: str
    ) -> ResolvedImage:
        if descriptor.family != spec.family or descriptor.layout_fingerprint != spec.fingerprint:
            raise FingerprintMismatch(
                f"{field}.layout_fingerprint",
                f"{descriptor.family}:{descriptor.layout_fingerprint}",
                f"{spec.family}:{spec.fingerprint} (this renderer's layout)",
            )
        data = store.read_verified(descriptor.raw_image_uri, descriptor.hash)
        fmt = stored_format(descriptor.raw_image_uri)
        with open_header(data, store.config, (fmt,)) as image:  # header only: the size decides the layout
            width, height = image.size
        layout = compute_layout(spec, width, height)
        if layout.payload() != descriptor.payload:
            raise PlaceholderMismatch(
                f"{field}.payload", descriptor.payload, f"{layout.payload()} for {width}x{height}"
            )
        return ResolvedImage(descriptor, layout.num_placeholder_tokens)


def located(error: ContractError, field: str, source: Any) -> ContractError:
    """The image check's error named from the conversation (`messages[m].images[k].<check>`) and told which source
    it came from, redacted (`describe_source`); the same class where its constructor allows."""
    check = error.field.removeprefix("image").removeprefix(".")
    name = f"{field}.{check}" if check else field
    return error.restated(name, f"{error.expected}; image from {describe_source(source)}")


def _content_key(raw: bytes | Image.Image) -> str:
    """xxh3-128 of encoded bytes, or of everything about a PIL image that its normalized pixels depend on."""
    if isinstance(raw, Image.Image):
        facts = (raw.mode, raw.size, raw.getexif().get(0x0112, 1), raw.info.get("transparency"), raw.getpalette())
        return "pil:" + xxhash.xxh3_128_hexdigest(repr(facts).encode() + raw.tobytes())
    return "raw:" + xxhash.xxh3_128_hexdigest(raw)
