"""A request's prompt and `mmraw:` refs -> the `TokensPrompt` vLLM takes (docs/contract.md section 9).

The refs get the trainer's checks without computing pixels here (vLLM's own processor computes them when
vLLM renders the prompt): each ref is decoded strictly (`refs.decode_refs`), paired with the next run
of image placeholders in the prompt, checked against the served processor's layout fingerprint and the
family's payload rules (the trainer's image adapter), read hash-verified from the store, and its grid
recomputed from the image size with the layout math every reader shares. Errors name the request's
field (`image_refs[1].layout_fingerprint`) and keep their ContractError class, hence their 4xx status.

vLLM expands every placeholder token it finds into one image's run (its Qwen-VL prompt update targets a
single `<|image_pad|>`), so each checked run is collapsed to one placeholder before the prompt is handed
over; `check_expansion` then confirms vLLM expanded it back to exactly the request's tokens. Each image's
content hash is its vLLM multimodal UUID, so vLLM's processor and prefix caches key on what the trainer
keys on, without hashing pixels again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from vllm.inputs import TokensPrompt

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import ContractError, FingerprintMismatch, PlaceholderMismatch
from foveal.renderers.layout import compute_layout
from foveal.renderers.placeholders import RunFields, Span, pair_images
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import ImageAdapter
from foveal.trainer.serving.engine.requests import EngineError
from foveal.trainer.serving.errors import invalid
from foveal.trainer.serving.refs import decode_refs, placeholder_counts

RUN_FIELDS = RunFields(
    "image_refs[{}]".format, "image_refs[{}].payload.num_placeholder_tokens".format, "prompt_token_ids"
)
"""How pairing errors name a request's fields; a short run blames the payload's placeholder count."""


@dataclass(frozen=True)
class ImageChecks:
    """What refs are checked against: the served processor's adapter and the store they are read from."""

    adapter: ImageAdapter
    store: ImageStore


@dataclass(frozen=True)
class EnginePrompt:
    """The prompt as vLLM takes it, and the token ids vLLM must expand it back to."""

    prompt: TokensPrompt
    expanded_ids: tuple[int, ...]


def engine_prompt(prompt_ids: Sequence[int], image_refs: Sequence[str], checks: ImageChecks | None) -> EnginePrompt:
    """Check the refs against the prompt and the served processor; collapse each image's run to one token."""
    descriptors = decode_refs(image_refs)
    unchanged = EnginePrompt(TokensPrompt(prompt_token_ids=list(prompt_ids)), tuple(prompt_ids))
    if checks is None:
        if descriptors:
            raise invalid("image_refs", "no images: the served model is text-only")
        return unchanged
    spans = pair_images(prompt_ids, checks.adapter.image_token_id, placeholder_counts(descriptors), RUN_FIELDS)
    if not spans:
        return unchanged
    images = [_checked_image(index, descriptor, checks) for index, descriptor in enumerate(descriptors)]
    prompt = TokensPrompt(
        prompt_token_ids=collapse_placeholders(prompt_ids, spans),
        multi_modal_data={"image": images},
        multi_modal_uuids={"image": [descriptor.hash for descriptor in descriptors]},
    )
    return EnginePrompt(prompt, tuple(prompt_ids))


def collapse_placeholders(prompt_ids: Sequence[int], spans: Sequence[Span]) -> list[int]:
    """The prompt with each span shortened to its first token, the form vLLM expands per image."""
    collapsed, cursor = [], 0
    for start, length in spans:
        collapsed.extend(prompt_ids[cursor : start + 1])
        cursor = start + length
    collapsed.extend(prompt_ids[cursor:])
    return collapsed


def check_expansion(engine_prompt_ids: Sequence[int] | None, expected: Sequence[int]) -> None:
    """vLLM's expanded prompt must be the request's: else its processor disagrees with the served layout."""
    if engine_prompt_ids is None or list(engine_prompt_ids) != list(expected):
        got = "none" if engine_prompt_ids is None else f"{len(engine_prompt_ids)} tokens"
        raise EngineError(
            f"vLLM expanded the prompt to {got}, the request has {len(expected)} tokens: its image processor "
            "disagrees with the layout this server checks refs against"
        )


def _checked_image(index: int, descriptor: RawImageDescriptor, checks: ImageChecks) -> Image.Image:
    """The verified image of ref `index`, once its fingerprint, payload and grid agree with the served processor."""
    field = f"image_refs[{index}]"
    spec = checks.adapter.spec
    if (descriptor.family, descriptor.layout_fingerprint) != (spec.family, spec.fingerprint):
        got = f"{descriptor.family}:{descriptor.layout_fingerprint}"
        raise FingerprintMismatch(f"{field}.layout_fingerprint", got, f"{spec.family}:{spec.fingerprint}")
    grid = checks.adapter.check_payload(descriptor.payload, field)
    try:
        image = checks.store.open_verified(descriptor.raw_image_uri, descriptor.hash)
        layout = compute_layout(spec, image.width, image.height)
    except ContractError as error:
        raise error.restated(f"{field}.{error.field}") from error
    if layout.image_grid_thw != grid:
        expected = f"{list(layout.image_grid_thw)}, the grid of this {image.width}x{image.height} image"
        raise PlaceholderMismatch(f"{field}.payload.image_grid_thw", list(grid), expected)
    return image
