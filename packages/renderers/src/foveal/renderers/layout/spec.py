"""The processor settings that decide an image's layout, and their fingerprint.

A descriptor records `layout_fingerprint` so that every reader (inference server, trainer) can prove
its own image processor would produce the same grid and placeholder count as the renderer that wrote
it. The fingerprint therefore covers exactly the settings that change the layout and nothing else:
image mean/std or the resampling filter change pixel values, never the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import orjson
import xxhash

from foveal.renderers.errors import ContractError


class AnyLayoutSpec(Protocol):
    """What every family's spec has: its family and the fingerprint of its settings (readers compare both)."""

    @property
    def family(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def settings(self) -> dict[str, Any]: ...


SpecT = TypeVar("SpecT", bound=AnyLayoutSpec)

_POSITIVE_INT_FIELDS = ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels")


@dataclass(frozen=True, slots=True)
class LayoutSpec:
    """Everything that decides how one family turns (width, height) into a patch grid.

    Frozen and hashable: it is the cache key of `compute_layout` and travels only in-process (what
    crosses a process boundary is its `fingerprint`).
    """

    family: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_family(self.family)
        for name in _POSITIVE_INT_FIELDS:
            check_positive_int(name, getattr(self, name))
        if self.max_pixels < self.min_pixels:
            raise ContractError("layout.max_pixels", self.max_pixels, f">= layout.min_pixels ({self.min_pixels})")
        object.__setattr__(self, "fingerprint", settings_fingerprint(self.settings()))

    @property
    def factor(self) -> int:
        """Side lengths are resized to multiples of this: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size

    def settings(self) -> dict[str, Any]:
        """The fingerprinted settings as a JSON-safe dict (the fingerprint itself excluded)."""
        return {
            "family": self.family,
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }


def with_pixel_bounds(spec: SpecT, min_pixels: int | None, max_pixels: int | None) -> SpecT:
    """Apply `[multimodal].min_pixels / max_pixels` overrides; None keeps the processor's own value.

    Returns a new spec (and so a new fingerprint): the reader's processor must be configured the same
    way, or the fingerprint check rejects the descriptor instead of silently changing the grid. A family
    with a fixed image size (`gemma3`) has no pixel bounds: it is returned as is when both are None, and an
    override is a ContractError naming it, never silently ignored.
    """
    if not isinstance(spec, LayoutSpec):
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None:
                expected = f"unset for {spec.family}: its processor resizes every image to one fixed size"
                raise ContractError(f"multimodal.{name}", value, expected)
        return spec
    return replace(
        spec,
        min_pixels=spec.min_pixels if min_pixels is None else min_pixels,
        max_pixels=spec.max_pixels if max_pixels is None else max_pixels,
    )


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """xxh3-128 of the canonical JSON (sorted keys, no whitespace): identical in every process and version."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS))


def check_family(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ContractError("layout.family", value, "a non-empty family name such as 'qwen2_vl'")


def check_positive_int(name: str, value: object) -> None:
    """Reject bools, floats and non-positive values: a float 14.0 would hash differently from 14."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ContractError(f"layout.{name}", value, "a positive int")
