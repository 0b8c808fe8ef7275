"""TrainingSample: per-token fields aligned, exact JSON/msgpack round trips, strict decoding of untrusted bytes."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from foveal.renderers.contract import RawImageDescriptor
from foveal.renderers.errors import BadEnvelope, ContractError, PlaceholderMismatch, UnknownFamily
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask, sample_from_obj

IMAGE = 9


def descriptor(tokens: int = 4) -> RawImageDescriptor:
    return RawImageDescriptor(
        raw_image_uri="file:///run/assets/ab/abababababababababababababababab.png",
        hash="ab" * 16,
        family="qwen3_vl",
        layout_fingerprint="cd" * 16,
        payload={"image_grid_thw": [1, 4, tokens], "num_placeholder_tokens": tokens},
    )


def sample(**fields: Any) -> TrainingSample:
    tokens = [1, 2, IMAGE, IMAGE, IMAGE, IMAGE, 3, 4]
    base: dict[str, Any] = {
        "sample_id": "rollout-17/2",
        "token_ids": tokens,
        "loss_weights": loss_weights_from_mask([0, 0, 0, 0, 0, 0, 1, 1]),
        "inference_logprobs": [0.0] * 6 + [-0.25, -1.5],
        "advantages": [0.0] * 6 + [0.75, 0.75],
        "mm_refs": build_mm_refs(tokens, [(descriptor(), (2, 4))], IMAGE, sample_id="rollout-17/2"),
    }
    return TrainingSample(**{**base, **fields})


def test_loss_weights_come_from_a_zero_one_mask() -> None:
    assert loss_weights_from_mask([0, 1, True, False]) == (0.0, 1.0, 1.0, 0.0)


@pytest.mark.parametrize("bad", [2, -1, 0.5, 1.0, "1"])
def test_loss_mask_values_other_than_zero_or_one_are_refused(bad: object) -> None:
    with pytest.raises(ContractError) as caught:
        loss_weights_from_mask([0, bad])
    assert caught.value.field == "loss_mask[1]"


@pytest.mark.parametrize("name", ["loss_weights", "inference_logprobs", "advantages"])
def test_per_token_field_of_another_length_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        sample(**{name: [0.0] * 7})


def test_defaults_are_weight_one_without_rl_fields() -> None:
    plain = TrainingSample(sample_id="t", token_ids=[5, 6], loss_weights=[0.0, 1.0])
    assert (plain.sample_weight, plain.inference_logprobs, plain.advantages, plain.mm_refs) == (1.0, None, None, ())


@pytest.mark.parametrize(
    "fields",
    [{"token_ids": [1, True]}, {"token_ids": [1, 2.0]}, {"loss_weights": [0.0, float("nan")]}, {"sample_weight": -1.0}],
)
def test_coercible_or_non_finite_values_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainingSample(**{"sample_id": "t", "token_ids": [1, 2], "loss_weights": [0.0, 1.0], **fields})


def test_a_sample_is_immutable() -> None:
    with pytest.raises(ValidationError):
        sample().sample_weight = 0.0  # type: ignore[misc]


def test_span_disagreeing_with_the_payload_is_rejected_on_construction() -> None:
    ref = sample().mm_refs[0].model_copy(update={"length": 3})
    with pytest.raises(ValidationError) as caught:
        sample(mm_refs=[ref])
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], PlaceholderMismatch)


def test_json_and_msgpack_round_trip_to_an_equal_sample() -> None:
    original = sample()
    assert TrainingSample.from_json(original.to_json()) == original
    assert TrainingSample.from_msgpack(original.to_msgpack()) == original
    assert TrainingSample.from_msgpack(original.to_msgpack()).mm_refs[0].descriptor == descriptor()


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_valid_sample_round_trips_exactly(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    per_token = st.lists(finite, min_size=n, max_size=n)
    original = TrainingSample(
        sample_id=data.draw(st.text(min_size=1, max_size=20)),
        token_ids=data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n)),
        loss_weights=data.draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n)),
        inference_logprobs=data.draw(st.none() | per_token),
        advantages=data.draw(st.none() | per_token),
        sample_weight=data.draw(st.floats(0, 10)),
    )
    assert TrainingSample.from_json(original.to_json()) == original
    assert TrainingSample.from_msgpack(original.to_msgpack()) == original


def edited(path: str, value: Any) -> bytes:
    """JSON of the reference sample with `value` set at dotted `path` (list indices as numbers)."""
    obj = orjson.loads(sample().to_json())
    *parents, last = path.split(".")
    target = obj
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    elif value is _DROP:
        del target[last]
    else:
        target[last] = value
    return orjson.dumps(obj)


class _Drop:
    """A removed-field marker whose repr is stable, so xdist workers collect identical test ids."""

    def __repr__(self) -> str:
        return "<drop>"


_DROP = _Drop()
DESCRIPTOR = "mm_refs.0.descriptor"


@pytest.mark.parametrize(
    "path",
    ["pixel_values", "mm_refs.0.image_embeds", f"{DESCRIPTOR}.payload.pixel_values", f"{DESCRIPTOR}.image_features"],
)
def test_processed_tensors_anywhere_in_the_payload_are_rejected(path: str) -> None:
    data = edited(path, [[0.5, 0.25]])
    as_msgpack = msgpack.packb(orjson.loads(data))
    for decode, payload in ((TrainingSample.from_json, data), (TrainingSample.from_msgpack, as_msgpack)):
        with pytest.raises(BadEnvelope) as caught:
            decode(payload)
        assert caught.value.field == path and "no processed tensors" in caught.value.expected


def test_tensors_nested_deep_in_a_payload_value_are_rejected() -> None:
    with pytest.raises(BadEnvelope) as caught:
        TrainingSample.from_json(edited(f"{DESCRIPTOR}.payload.extra", {"deep": [{"pixel_values_videos": [1.0]}]}))
    assert caught.value.field == f"{DESCRIPTOR}.payload.extra.deep.0.pixel_values_videos"


@pytest.mark.parametrize(
    ("path", "value", "error", "field"),
    [
        (f"{DESCRIPTOR}.kind", _DROP, BadEnvelope, f"{DESCRIPTOR}.kind"),
        (f"{DESCRIPTOR}.family", "llava", UnknownFamily, f"{DESCRIPTOR}.family"),
        ("mm_refs.0.offset", 5, PlaceholderMismatch, "sample 'rollout-17/2'.mm_refs[0].offset"),
        ("token_ids.1", "2", BadEnvelope, "token_ids.1"),
        ("loss_weights.0", {"pixel_values": [0.0]}, BadEnvelope, "loss_weights.0"),
        ("surprise", 1, BadEnvelope, "surprise"),
        ("loss_weights", _DROP, BadEnvelope, "loss_weights"),
    ],
)
def test_malformed_wire_samples_raise_typed_errors_naming_the_field(
    path: str, value: Any, error: type, field: str
) -> None:
    with pytest.raises(error) as caught:
        TrainingSample.from_json(edited(path, value))
    assert caught.value.field == field


def test_msgpack_extension_types_and_binary_values_are_rejected() -> None:
    obj = orjson.loads(sample().to_json())
    with pytest.raises(BadEnvelope, match="extension"):
        TrainingSample.from_msgpack(msgpack.packb({**obj, "sample_id": msgpack.ExtType(5, b"x")}))
    with pytest.raises(BadEnvelope):
        TrainingSample.from_msgpack(msgpack.packb({**obj, "sample_id": b"raw-bytes"}, use_bin_type=True))


def test_a_pickled_sample_is_not_accepted() -> None:
    pickled = pickle.dumps(orjson.loads(sample().to_json()))
    with pytest.raises(BadEnvelope):
        TrainingSample.from_msgpack(pickled)
    with pytest.raises(BadEnvelope):
        TrainingSample.from_json(pickled)


def test_non_map_top_level_is_rejected() -> None:
    with pytest.raises(BadEnvelope):
        sample_from_obj([1, 2, 3])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_contract_errors(data: bytes) -> None:
    for decode in (TrainingSample.from_msgpack, TrainingSample.from_json):
        try:
            decode(data)
        except ContractError:
            pass


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["sample_id", "token_ids", "loss_weights", "mm_refs", "advantages", "sample_weight"])


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_arbitrary_msgpack_maps_raise_only_contract_errors(obj: dict[str, Any]) -> None:
    try:
        TrainingSample.from_msgpack(msgpack.packb(obj, use_bin_type=True))
    except ContractError:
        pass
