"""MMRefs: one image of a training sample as its raw descriptor plus the token span of its placeholders.

A span that is off by one token feeds the model the wrong image features, or crashes the vision merge
deep inside the model, far from the sample that caused it. So spans are checked against the tokens where
an MMRef is built and again where pixels are materialized, and every error names the sample and the
image index (docs/contract.md section 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from foveal.renderers.contract import RawImageDescriptor, descriptor_from_obj
from foveal.renderers.errors import ContractError, PlaceholderMismatch
from foveal.renderers.placeholders import RunFields, check_runs, payload_runs

ImageSpan = tuple[RawImageDescriptor, tuple[int, int]]
"""What a renderer hands over for one image: its descriptor and its placeholder run (offset, length)."""


def sample_field(sample_id: str, name: str) -> str:
    """The dotted field an error reports for something inside one sample: `sample 'abc'.mm_refs[1].offset`."""
    return f"sample {sample_id!r}.{name}"


def ref_field(sample_id: str, index: int, name: str) -> str:
    """The field of image `index` of a sample, as errors report it."""
    return sample_field(sample_id, f"mm_refs[{index}].{name}")


class MMRef(BaseModel):
    """One image of a sample: its descriptor and the run `[offset, offset + length)` of its placeholders."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    descriptor: RawImageDescriptor
    offset: Annotated[StrictInt, Field(ge=0)]
    length: Annotated[StrictInt, Field(gt=0)]

    @field_validator("descriptor", mode="before")
    @classmethod
    def _strict_descriptor(cls, value: Any) -> Any:
        # A descriptor from the wire must carry its envelope explicitly; descriptor_from_obj insists on it.
        if not isinstance(value, dict):
            return value
        try:
            return descriptor_from_obj(value)
        except ContractError as error:
            raise error.restated(f"descriptor.{error.field}") from None

    @property
    def end(self) -> int:
        """One past the last placeholder token of this image."""
        return self.offset + self.length

    @property
    def num_placeholder_tokens(self) -> int:
        """How many placeholders the descriptor's layout says this image needs."""
        return int(self.descriptor.payload["num_placeholder_tokens"])  # type: ignore[arg-type]


def check_ref_layout(num_tokens: int, refs: Sequence[MMRef], sample_id: str) -> None:
    """Spans in bounds, in order, not overlapping, each as long as its descriptor's placeholder count.

    Needs no token ids, so a `TrainingSample` checks it on construction; `check_mm_refs` adds the
    token-level checks once the image token id is known.
    """
    end_of_previous = 0
    for index, ref in enumerate(refs):
        if ref.length != ref.num_placeholder_tokens:
            expected = f"{ref.num_placeholder_tokens} (payload.num_placeholder_tokens)"
            raise PlaceholderMismatch(ref_field(sample_id, index, "length"), ref.length, expected)
        if ref.offset < end_of_previous:
            expected = f">= {end_of_previous}: spans in order, not overlapping the previous image's"
            raise PlaceholderMismatch(ref_field(sample_id, index, "offset"), ref.offset, expected)
        if ref.end > num_tokens:
            expected = f"a span ending at or before the sample's {num_tokens} tokens"
            raise PlaceholderMismatch(ref_field(sample_id, index, "offset"), (ref.offset, ref.length), expected)
        end_of_previous = ref.end


def check_mm_refs(token_ids: Sequence[int], refs: Sequence[MMRef], image_token_id: int, sample_id: str) -> None:
    """The full check: layout, then every span exactly one of the tokens' placeholder runs, none left over."""
    check_ref_layout(len(token_ids), refs, sample_id)

    def span(index: int) -> str:
        return ref_field(sample_id, index, "span")

    fields = RunFields(image=span, run=span, tokens=sample_field(sample_id, "token_ids"))
    runs = [payload_runs(ref.descriptor.payload) for ref in refs]  # SmolVLM: one run per tile
    check_runs(token_ids, image_token_id, [(ref.offset, ref.length) for ref in refs], fields, runs)


def build_mm_refs(
    token_ids: Sequence[int], images: Sequence[ImageSpan], image_token_id: int, *, sample_id: str = "?"
) -> list[MMRef]:
    """MMRefs for a rendered sample's images, refusing any that disagree with its tokens.

    `images` holds, in prompt order, each image's descriptor and `(offset, length)` span, so this needs
    no particular renderer class. Raises PlaceholderMismatch naming the sample and the image index.
    """
    refs = [_ref(sample_id, index, item) for index, item in enumerate(images)]
    check_mm_refs(token_ids, refs, image_token_id, sample_id)
    return refs


class PlacedImage(Protocol):
    """An image with its placeholder run, as renderers (`RenderedImage`) and rollouts (`RolloutImage`) give it."""

    descriptor: RawImageDescriptor
    offset: int
    length: int


def mm_refs_of(
    token_ids: Sequence[int], images: Sequence[PlacedImage], image_token_id: int | None, *, sample_id: str
) -> tuple[MMRef, ...]:
    """`build_mm_refs` for placed images; a model without an image token (-1: matches no token) has none."""
    spans = [(image.descriptor, (image.offset, image.length)) for image in images]
    token = -1 if image_token_id is None else image_token_id
    return tuple(build_mm_refs(token_ids, spans, token, sample_id=sample_id))


def _ref(sample_id: str, index: int, item: ImageSpan) -> MMRef:
    descriptor, (offset, length) = item
    for name, value in (("offset", offset), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "offset" else 1):
            raise PlaceholderMismatch(ref_field(sample_id, index, name), value, "a non-negative int (length > 0)")
    return MMRef(descriptor=descriptor, offset=offset, length=length)
