"""A request's `mmraw:` refs -> the model's pixel inputs (CONTRACT.md section 3), with the trainer's checks.

Each ref is decoded strictly, paired in order with the next placeholder run of the prompt, and handed to
the trainer's `Materializer` as a one-sample batch: the same hash-verified store read, fingerprint check
against the served processor, real image processor and grid/placeholder checks a training step runs. So
a server and a trainer can never disagree on what a ref means. The location is checked against the
store even when the materializer's pixel cache would answer without reading the file. Errors keep their
ContractError class (and so their HTTP status) with the field renamed to the request's:
`image_refs[1].layout_fingerprint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from foveal.renderers.contract import RawImageDescriptor, decode_mmraw, file_uri_to_path
from foveal.renderers.errors import ContractError, PlaceholderMismatch
from foveal.renderers.locations import require_inside
from foveal.renderers.store import ImageStore
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.mm_refs import MMRef, sample_field
from foveal.trainer.data.samples import sample_from_obj

_SAMPLE_ID = "request"
_RENAMES = (
    (sample_field(_SAMPLE_ID, "mm_refs["), "image_refs["),
    (sample_field(_SAMPLE_ID, "token_ids"), "prompt_token_ids"),
    (sample_field(_SAMPLE_ID, ""), ""),
    ("].descriptor.", "]."),
)


@dataclass(frozen=True)
class RequestImages:
    """The model's image kwargs for one prompt, and a key naming the images (for the prompt cache)."""

    pixel_kwargs: Mapping[str, torch.Tensor]
    key: str


NO_IMAGES = RequestImages({}, "")


def decode_refs(refs: Sequence[str]) -> list[RawImageDescriptor]:
    """Every ref decoded; a bad one raises its ContractError with field `image_refs[i]...`."""
    descriptors = []
    for index, ref in enumerate(refs):
        try:
            descriptors.append(decode_mmraw(ref))
        except ContractError as error:
            raise _renamed(error, f"image_refs[{index}]") from None
    return descriptors


def materialize_images(
    prompt_ids: Sequence[int], descriptors: Sequence[RawImageDescriptor], materializer: Materializer
) -> RequestImages:
    """Check the images against the prompt's placeholders and the served processor, then compute pixels."""
    if not descriptors:
        _check_no_placeholders(prompt_ids, materializer.adapter.image_token_id)
        return NO_IMAGES
    for index, descriptor in enumerate(descriptors):
        _check_location(descriptor, materializer.store, index)
    refs = _spans(prompt_ids, descriptors, materializer.adapter.image_token_id)
    fields = {"sample_id": _SAMPLE_ID, "token_ids": tuple(prompt_ids), "loss_weights": (0.0,) * len(prompt_ids)}
    try:
        materialized = materializer.materialize(sample_from_obj({**fields, "mm_refs": refs}))
    except ContractError as error:
        raise _renamed(error) from None
    return RequestImages(dict(materialized.pixel_kwargs), ",".join(d.hash for d in descriptors))


def _spans(
    prompt_ids: Sequence[int], descriptors: Sequence[RawImageDescriptor], image_token_id: int
) -> tuple[MMRef, ...]:
    """Pair image i with the i-th placeholder run, as long as its descriptor says (checked in full later)."""
    refs, cursor = [], 0
    for index, descriptor in enumerate(descriptors):
        start = next((i for i in range(cursor, len(prompt_ids)) if prompt_ids[i] == image_token_id), None)
        if start is None:
            expected = f"a run of image placeholder tokens ({image_token_id}) in prompt_token_ids for every ref"
            raise PlaceholderMismatch(f"image_refs[{index}]", f"ref {index} of {len(descriptors)}", expected)
        length = int(descriptor.payload["num_placeholder_tokens"])  # type: ignore[arg-type]
        if start + length > len(prompt_ids):
            expected = f"{length} placeholder tokens (payload.num_placeholder_tokens) inside the prompt"
            raise PlaceholderMismatch(f"image_refs[{index}].payload.num_placeholder_tokens", length, expected)
        refs.append(MMRef(descriptor=descriptor, offset=start, length=length))
        cursor = start + length
    return tuple(refs)


def _check_location(descriptor: RawImageDescriptor, store: ImageStore, index: int) -> None:
    """The ref must name a file inside the store even when its pixels are cached and no file is read."""
    path = Path(file_uri_to_path(descriptor.raw_image_uri)).resolve()
    require_inside(path, (store.root,), descriptor.raw_image_uri, f"image_refs[{index}].raw_image_uri")


def _check_no_placeholders(prompt_ids: Sequence[int], image_token_id: int) -> None:
    if image_token_id in prompt_ids:
        position = list(prompt_ids).index(image_token_id)
        expected = "no image placeholder tokens without an image ref"
        raise PlaceholderMismatch("prompt_token_ids", f"placeholder at {position}", expected)


def _renamed(error: ContractError, prefix: str = "") -> ContractError:
    """The same error class, its field spelled the way the request names it."""
    field = error.field
    for old, new in _RENAMES:
        field = field.replace(old, new)
    if prefix:
        field = prefix if field == "ref" else f"{prefix}.{field}"
    return type(error)(field, error.value, error.expected)
