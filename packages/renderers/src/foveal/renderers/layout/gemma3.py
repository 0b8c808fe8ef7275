"""Layout adapter for Gemma 3: every image is one fixed-size SigLIP image, so one fixed placeholder count.

Gemma3ImageProcessor resizes every image to `size` ({"height": 896, "width": 896} in the released
checkpoints), whatever its own size or aspect ratio; SigLIP cuts it into patches (896 / 14 = 64 a side) and
the model's projector average-pools them to `mm_tokens_per_image` soft tokens (4x4 pooling to 16 x 16 = 256).
Gemma3Processor writes `image_seq_length` (processor_config.json, default 256, equal to the model's
`mm_tokens_per_image`) copies of `<image_soft_token>` per image. The layout is therefore a function of the
settings alone: the image's width and height only have to be valid.

The payload's `image_grid_thw` is the pooled token grid `[1, s, s]` with `s * s = image_seq_length` (the
processor reports no grid, and the SigLIP patch size lives in the model's config, not the processor's), so
`num_placeholder_tokens = t * h * w`: a merge size of 1.

Pan-and-scan (`do_pan_and_scan`) would add crops, each one more full image sequence, after the first one.
Gemma3Processor passes `do_pan_and_scan=False` to its image processor unless a caller asks otherwise, so a
`true` in preprocessor_config.json is ignored there but honoured by the bare image processor; such a config
is refused rather than guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foveal.renderers.errors import ContractError
from foveal.renderers.layout.family import LayoutFamily
from foveal.renderers.layout.image_layout import ImageLayout
from foveal.renderers.layout.spec import check_family, check_positive_int, settings_fingerprint

# Both backends of transformers' Gemma 3 image processor (torchvision and PIL/numpy).
GEMMA3_PROCESSORS = frozenset({"Gemma3ImageProcessor", "Gemma3ImageProcessorPil"})
DEFAULT_IMAGE_SEQ_LENGTH = 256
"""Gemma3Processor's `image_seq_length` when processor_config.json does not set it."""


@dataclass(frozen=True, slots=True)
class Gemma3LayoutSpec:
    """The settings that decide a Gemma 3 image's placeholder run: the fixed image size and tokens per image.

    Frozen and hashable like `LayoutSpec`; its `fingerprint` is xxh3-128 of `settings()` as sorted-key JSON.
    """

    family: str
    image_height: int
    image_width: int
    tokens_per_image: int
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_family(self.family)
        for name in ("image_height", "image_width", "tokens_per_image"):
            check_positive_int(name, getattr(self, name))
        if math.isqrt(self.tokens_per_image) ** 2 != self.tokens_per_image:
            expected = "a square number: the projector pools the patches to a square grid of soft tokens"
            raise ContractError("layout.tokens_per_image", self.tokens_per_image, expected)
        object.__setattr__(self, "fingerprint", settings_fingerprint(self.settings()))

    @property
    def tokens_per_side(self) -> int:
        return math.isqrt(self.tokens_per_image)

    def settings(self) -> dict[str, Any]:
        """The fingerprinted settings (pan-and-scan is always off: a spec with it on cannot be built)."""
        return {
            "family": self.family,
            "image_height": self.image_height,
            "image_width": self.image_width,
            "tokens_per_image": self.tokens_per_image,
            "pan_and_scan": False,
        }


def gemma3_layout(spec: Gemma3LayoutSpec, width: int, height: int) -> ImageLayout:
    """Any valid width x height: resized to the fixed size, `tokens_per_image` placeholders."""
    side = spec.tokens_per_side
    return ImageLayout(
        family=spec.family,
        fingerprint=spec.fingerprint,
        resized=(spec.image_height, spec.image_width),
        image_grid_thw=(1, side, side),
        num_placeholder_tokens=spec.tokens_per_image,
    )


def read_gemma3_spec(
    image_processor: Any, family: str, processor_config: Mapping[str, Any] | None = None
) -> Gemma3LayoutSpec:
    """Read a Gemma 3 image processor (either backend) plus the processor's `image_seq_length`.

    `processor_config` is the model's processor_config.json (what Gemma3Processor is built from); without
    `image_seq_length` there, the processor's default of 256 applies, as in transformers.
    """
    if image_processor.do_resize is not True:
        raise ContractError("image_processor.do_resize", image_processor.do_resize, "True: every image is resized")
    pan_and_scan = getattr(image_processor, "do_pan_and_scan", None)
    if pan_and_scan:
        expected = "false or unset: pan-and-scan crops are not supported (Gemma3Processor's own default is off)"
        raise ContractError("image_processor.do_pan_and_scan", pan_and_scan, expected)
    size = image_processor.size
    height, width = (None, None) if size is None else (size.get("height"), size.get("width"))
    if height is None or width is None:
        raise ContractError("image_processor.size", size, "a fixed {'height': ..., 'width': ...} size")
    tokens = (processor_config or {}).get("image_seq_length", DEFAULT_IMAGE_SEQ_LENGTH)
    return Gemma3LayoutSpec(family=family, image_height=height, image_width=width, tokens_per_image=tokens)


GEMMA3 = LayoutFamily(
    name="gemma3",
    processor_classes=GEMMA3_PROCESSORS,
    read_spec=read_gemma3_spec,
    compute=gemma3_layout,
    spec_type=Gemma3LayoutSpec,
)
