"""A request's `mmraw:` refs -> the model's pixel inputs (docs/contract.md section 9), with the trainer's checks.

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
from foveal.renderers.errors import ContractError, DisallowedLocation, HashMismatch
from foveal.renderers.locations import require_inside
from foveal.renderers.placeholders import RunFields, pair_images, payload_runs
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
REQUEST_RUN_FIELDS = RunFields("image_refs[{}]".format, "image_refs[{}].span".format, "prompt_token_ids")
"""How pairing errors name a request's fields: `image_refs[1].span`, `prompt_token_ids`."""


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
    for index, descriptor in enumerate(descriptors):
        _check_location(descriptor, materializer.store, index)
    runs = [payload_runs(d.payload) for d in descriptors]  # SmolVLM: one run per tile
    counts = placeholder_counts(descriptors)
    spans = pair_images(prompt_ids, materializer.adapter.image_token_id, counts, REQUEST_RUN_FIELDS, runs)
    if not descriptors:
        return NO_IMAGES
    refs = [MMRef(descriptor=d, offset=start, length=n) for d, (start, n) in zip(descriptors, spans, strict=True)]
    fields = {"sample_id": _SAMPLE_ID, "token_ids": tuple(prompt_ids), "loss_weights": (0.0,) * len(prompt_ids)}
    try:
        materialized = materializer.materialize(sample_from_obj({**fields, "mm_refs": refs}))
    except ContractError as error:
        raise _renamed(error) from None
    return RequestImages(dict(materialized.pixel_kwargs), ",".join(d.hash for d in descriptors))


def placeholder_counts(descriptors: Sequence[RawImageDescriptor]) -> list[int]:
    """Each image's placeholder count as its payload states it (checked against its grid later)."""
    return [int(d.payload["num_placeholder_tokens"]) for d in descriptors]  # type: ignore[arg-type]


def _check_location(descriptor: RawImageDescriptor, store: ImageStore, index: int) -> None:
    """The ref must name a file inside the store even when its pixels are cached and no file is read. The refusal
    names the client's URI, never the store's own path."""
    field = f"image_refs[{index}].raw_image_uri"
    path = Path(file_uri_to_path(descriptor.raw_image_uri)).resolve()
    try:
        require_inside(path, (store.root,), descriptor.raw_image_uri, field)
    except DisallowedLocation:
        raise DisallowedLocation(field, descriptor.raw_image_uri, "a file inside this server's image store") from None


def _renamed(error: ContractError, prefix: str = "") -> ContractError:
    """The same error class, its field spelled the way the request names it and nothing of the server's own in it
    (a stored file's real hash stays in the server's log); a class built otherwise becomes a plain ContractError."""
    field = error.field
    for old, new in _RENAMES:
        field = field.replace(old, new)
    if prefix:
        field = prefix if field == "ref" else f"{prefix}.{field}"
    return error.restated(field, _PUBLIC_EXPECTED.get(type(error)))


_PUBLIC_EXPECTED: dict[type[ContractError], str] = {
    HashMismatch: "stored bytes that hash to it (the stored file differs: tampered or corrupt)",
}
