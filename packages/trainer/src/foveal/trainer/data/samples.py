"""`TrainingSample`: what travels between processes for one sequence to train on (docs/contract.md section 6).

Token ids, per-token loss weights, optional inference logprobs and advantages, and `mm_refs` (descriptor
plus placeholder span per image). It crosses process boundaries as JSON (orjson) or msgpack of plain
values: never pickle, never a tensor. Decoding is strict because the bytes may come from another
machine: anything that is not exactly this shape is a `BadEnvelope` naming the field, and a payload
that smuggles processed pixels (`pixel_values`, `image_embeds`, ...) is refused wherever it sits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgpack
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from foveal.renderers.contract import contract_error_from_validation, find_processed_tensor_key
from foveal.renderers.errors import BadEnvelope, ContractError
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.data.mm_refs import MMRef, check_ref_layout, mm_refs_of, sample_field

if TYPE_CHECKING:  # a type only: samples travel to processes that never open a dataset
    from foveal.trainer.data.sources import Conversation

MAX_TOKEN_ID = 2**31 - 1
"""Token ids are vocabulary indices; anything larger is corrupt input, not a big vocabulary."""

_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Weight = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0)]
_TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKEN_ID)]
_PER_TOKEN_OPTIONAL = ("inference_logprobs", "advantages")
_PER_TOKEN_FIELDS = frozenset({"token_ids", "loss_weights", *_PER_TOKEN_OPTIONAL})


class TrainingSample(BaseModel):
    """One sequence to train on; immutable, with every per-token field as long as `token_ids`.

    Constructing one directly raises pydantic's ValidationError on bad input (a programming error);
    bytes from another process go through `from_json` / `from_msgpack`, which raise ContractErrors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_id: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    token_ids: Annotated[tuple[_TokenId, ...], Field(min_length=1)]
    loss_weights: tuple[_Weight, ...]
    inference_logprobs: tuple[_Finite, ...] | None = None
    advantages: tuple[_Finite, ...] | None = None
    sample_weight: _Weight = 1.0
    mm_refs: tuple[MMRef, ...] = ()

    @model_validator(mode="after")
    def _aligned(self) -> TrainingSample:
        for name in ("loss_weights", *_PER_TOKEN_OPTIONAL):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.token_ids):
                expected = f"one value per token ({len(self.token_ids)})"
                raise BadEnvelope(sample_field(self.sample_id, name), f"<{len(values)} values>", expected)
        check_ref_layout(len(self.token_ids), self.mm_refs, self.sample_id)
        return self

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def to_json(self) -> bytes:
        """orjson bytes of the plain fields; `from_json` reads them back to an equal sample."""
        return orjson.dumps(self.model_dump(mode="json"))

    def to_msgpack(self) -> bytes:
        """msgpack of the same plain fields (floats stay 64-bit, so they round-trip exactly)."""
        return msgpack.packb(self.model_dump(mode="json"), use_bin_type=True)

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> TrainingSample:
        """Decode untrusted JSON; every failure is a ContractError naming the field."""
        try:
            obj = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError):
            raise BadEnvelope("sample", _preview(data), "UTF-8 JSON of a training sample") from None
        return sample_from_obj(obj)

    @classmethod
    def from_msgpack(cls, data: bytes | bytearray | memoryview) -> TrainingSample:
        """Decode untrusted msgpack: plain maps, arrays, strings and numbers only (no ext types, no pickle)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BadEnvelope("sample", type(data).__name__, "msgpack bytes")
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0)
        except ContractError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException):
            raise BadEnvelope("sample", _preview(data), "msgpack of a training sample") from None
        return sample_from_obj(obj)


def sample_from_obj(obj: Any) -> TrainingSample:
    """Validate a decoded JSON/msgpack value as a TrainingSample, raising only ContractErrors."""
    if not isinstance(obj, dict):
        raise BadEnvelope("sample", type(obj).__name__, "a map of training sample fields")
    # Per-token fields are skipped (fast): they hold numbers only, and validation refuses anything else there.
    tensor_key = find_processed_tensor_key({k: v for k, v in obj.items() if k not in _PER_TOKEN_FIELDS}, "")
    if tensor_key:
        raise BadEnvelope(tensor_key, "<tensor>", "no processed tensors in a training sample (MMRefs only)")
    try:
        return TrainingSample.model_validate(obj)
    except ValidationError as error:
        raise contract_error_from_validation(error) from None


def loss_weights_from_mask(loss_mask: Sequence[int | bool]) -> tuple[float, ...]:
    """Per-token weights from a renderer's 0/1 loss mask; anything but 0/1 is refused, not rounded."""
    weights = []
    for index, value in enumerate(loss_mask):
        if value not in (0, 1) or isinstance(value, float):
            raise ContractError(f"loss_mask[{index}]", value, "0 or 1")
        weights.append(float(value))
    return tuple(weights)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadEnvelope("sample", f"<msgpack ext type {code}>", "plain msgpack values (no extension types)")


def _preview(data: Any) -> str:
    return f"<{type(data).__name__} of {len(data)}>" if hasattr(data, "__len__") else type(data).__name__


def sample_from_render(
    rendered: RenderedConversation, image_token_id: int | None, sample_id: str, loss_weights: Sequence[float] | None
) -> TrainingSample:
    """A rendered sequence as a TrainingSample with checked MMRefs; `loss_weights` None means no loss on it."""
    weights = tuple(loss_weights) if loss_weights is not None else (0.0,) * len(rendered.token_ids)
    return TrainingSample(
        sample_id=sample_id,
        token_ids=rendered.token_ids,
        loss_weights=weights,
        mm_refs=mm_refs_of(rendered.token_ids, rendered.images, image_token_id, sample_id=sample_id),
    )


def render_sample(renderer: Renderer, conversation: Conversation) -> TrainingSample:
    """Render a conversation (with its loss mask) and check its image spans into a TrainingSample."""
    rendered = renderer.render(conversation.messages)
    weights = loss_weights_from_mask(rendered.loss_mask)
    return sample_from_render(rendered, renderer.image_token_id, conversation.sample_id, weights)
