"""Tinker `Datum`s and prompts -> Foveal samples, through the renderer and the multimodal contract.

A model input's image chunks go through the renderer's store exactly like chat images: inline bytes are
checked, stored once by content hash; asset pointers are read only under `[multimodal]`'s allowed roots
and schemes. Each image becomes an MMRef (descriptor + placeholder span), never pixels: pixels are made
per sample at compute time by the materializer, so images of different sizes are never padded together.
An image chunk's `expected_tokens` must equal the layout's placeholder count. Loss inputs must hold one
value per model-input token (Tinker's alignment: position i predicts `target_tokens[i]`).
Every failure is a 4xx naming the field, e.g. `data[3].loss_fn_inputs.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foveal.renderers.chunks import ModelInput
from foveal.renderers.errors import ContractError
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.serving.errors import invalid, too_long
from foveal.trainer.data.samples import sample_from_render
from foveal.trainer.tinker_service.losses import LossSpec
from foveal.trainer.tinker_service.protowire import DatumIn


@dataclass(frozen=True)
class PreparedDatum:
    """A datum ready for the trainer: its sample (tokens + MMRefs), target ids and float loss inputs."""

    sample: TrainingSample
    targets: np.ndarray
    inputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class Vocabulary:
    """What checking token ids needs: the model's vocabulary size and the longest sequence accepted."""

    size: int
    max_tokens: int


def render_prompt(model_input: ModelInput, renderer: Renderer, field: str) -> RenderedConversation:
    """Token ids with placeholder runs and stored images; contract errors are re-raised under `field`."""
    try:
        return renderer.render_model_input(model_input)
    except ContractError as error:
        raise error.restated(f"{field}.{error.field}") from error


def check_token_ids(token_ids: Sequence[int], vocab: Vocabulary, field: str) -> None:
    """Every id a vocabulary index and the sequence within the limit (400 naming the first bad position)."""
    if len(token_ids) > vocab.max_tokens:
        raise too_long(field, f"{len(token_ids)} tokens; at most {vocab.max_tokens}")
    bad = next((i for i, token in enumerate(token_ids) if not 0 <= token < vocab.size), None)
    if bad is not None:
        raise invalid(f"{field}[{bad}]", f"a token id in [0, {vocab.size}) (got {token_ids[bad]})")


def prepare_datum(
    datum: DatumIn, index: int, renderer: Renderer, vocab: Vocabulary, loss: LossSpec
) -> PreparedDatum:
    """Render, store and check one datum of a forward_backward request."""
    field = f"data[{index}]"
    rendered = render_prompt(datum.model_input, renderer, f"{field}.model_input")
    check_token_ids(rendered.token_ids, vocab, f"{field}.model_input.token_ids")
    length = len(rendered.token_ids)
    if length == 0:
        raise invalid(f"{field}.model_input", "at least one token")
    allowed = {"target_tokens", *loss.inputs}
    for name in datum.loss_fn_inputs:
        if name not in allowed:
            raise invalid(f"{field}.loss_fn_inputs.{name}", f"one of {sorted(allowed)} for this loss")
    targets = _aligned(datum, "target_tokens", length, field).astype(np.int64)
    check_token_ids(targets.tolist(), Vocabulary(vocab.size, length), f"{field}.loss_fn_inputs.target_tokens")
    inputs = {name: _aligned(datum, name, length, field).astype(np.float32) for name in loss.inputs}
    for name, values in inputs.items():
        if not np.isfinite(values).all():
            raise invalid(f"{field}.loss_fn_inputs.{name}", "finite numbers only")
    # No loss weights: Tinker's losses read `target_tokens` and their own inputs.
    sample = sample_from_render(rendered, renderer.image_token_id, f"datum-{index}", loss_weights=None)
    return PreparedDatum(sample, targets, inputs)


def _aligned(datum: DatumIn, name: str, length: int, field: str) -> np.ndarray:
    values = datum.loss_fn_inputs.get(name)
    if values is None:
        raise invalid(f"{field}.loss_fn_inputs.{name}", "required by this loss")
    if len(values) != length:
        expected = f"{length} values, one per model_input token (image chunks count their placeholder tokens)"
        raise invalid(f"{field}.loss_fn_inputs.{name}", f"{expected} (got {len(values)})")
    return values
