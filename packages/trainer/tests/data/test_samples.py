"""TrainingSample: per-token fields aligned, exact JSON/msgpack round trips, strict decoding of untrusted bytes."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from foveal.renderers.contract import RawImageDescriptor, is_processed_tensor_key
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


_FIELDS = ("sample_id", "token_ids", "loss_weights", "inference_logprobs", "advantages", "sample_weight", "mm_refs")
_REQUIRED = frozenset({"sample_id", "token_ids", "loss_weights"})
_FLOAT_FIELDS = frozenset({"loss_weights", "inference_logprobs", "advantages", "sample_weight"})
REFERENCE_MM_REFS = orjson.loads(sample().to_json())["mm_refs"]


def _tensor_key_path(value: object, where: str) -> str | None:
    """Dotted path of the first processed-tensor key inside `value` (depth first, in order), or None."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in children:
        name = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and is_processed_tensor_key(key):
            return name
        found = _tensor_key_path(item, name)
        if found:
            return found
    return None


def _number(value: object, minimum: float | None) -> bool:
    """A JSON/msgpack number a strict finite float field takes: int or float, never bool, NaN or infinity."""
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return False
    return minimum is None or value >= minimum  # type: ignore[operator]


def _first_bad_item(name: str, value: object, ok: Callable[[object], bool], min_length: int = 0) -> str | None:
    if not isinstance(value, list) or len(value) < min_length:
        return name
    return next((f"{name}.{index}" for index, item in enumerate(value) if not ok(item)), None)


def _bad_field(name: str, value: object) -> str | None:
    """The field a refusal of `value` as `name` names (the field or one of its items), or None when valid."""
    if name == "sample_id":
        return None if isinstance(value, str) and 1 <= len(value) <= 512 else name
    if name == "token_ids":
        return _first_bad_item(name, value, lambda x: type(x) is int and 0 <= x <= 2**31 - 1, min_length=1)
    if name == "loss_weights":
        return _first_bad_item(name, value, lambda x: _number(x, 0.0))
    if name in ("inference_logprobs", "advantages"):
        return None if value is None else _first_bad_item(name, value, lambda x: _number(x, None))
    if name == "sample_weight":
        return None if _number(value, 0.0) else name
    assert name == "mm_refs"
    if value in ([], REFERENCE_MM_REFS):
        return None
    if not isinstance(value, list):
        return name
    first = value[0]
    # Generated dict keys are at most 8 characters, so an item never holds a `descriptor` (10): none is an MMRef.
    assert not (isinstance(first, dict) and "descriptor" in first), first
    return f"{name}.0.descriptor" if isinstance(first, dict) else f"{name}.0"


def expected_sample_refusal(obj: object) -> str | None:
    """The field `sample_from_obj(obj)` must name in its BadEnvelope (docs/contract.md section 6), or None when
    `obj` is a valid sample: the map itself, a smuggled tensor, then each field in declaration order, then extra
    fields, then per-token lengths."""
    if not isinstance(obj, dict):
        return "sample"
    tensor_key = _tensor_key_path({k: v for k, v in obj.items() if k not in ("token_ids", "loss_weights",
                                   "inference_logprobs", "advantages")}, "")  # fmt: skip
    if tensor_key:
        return tensor_key
    for name in _FIELDS:
        if name not in obj:
            if name in _REQUIRED:
                return name
            continue
        bad = _bad_field(name, obj[name])
        if bad:
            return bad
    extra = next((key for key in obj if key not in _FIELDS), None)
    if extra is not None:
        return extra
    for name in ("loss_weights", "inference_logprobs", "advantages"):
        if obj.get(name) is not None and len(obj[name]) != len(obj["token_ids"]):
            return f"sample {obj['sample_id']!r}.{name}"
    # The reference image span ends at token 6; a map keeping it also keeps the reference's 8 inference logprobs,
    # so an aligned map has 8 tokens and the span always fits.
    assert not obj.get("mm_refs") or len(obj["token_ids"]) == 8
    return None


def assert_refused_or_decoded_exactly(decode: Callable[[Any], TrainingSample], data: bytes, obj: object) -> None:
    """`decode(data)`, whose bytes hold `obj` (or `_UNDECODABLE`), raises BadEnvelope naming the expected field; a
    valid `obj` decodes to a sample holding exactly its values, which round-trips."""
    expected = "sample" if obj is _UNDECODABLE else expected_sample_refusal(obj)
    if expected is not None:
        with pytest.raises(ContractError) as caught:
            decode(data)
        assert (type(caught.value), caught.value.field) == (BadEnvelope, expected), caught.value
        return
    decoded = decode(data)
    assert isinstance(obj, dict)
    held = decoded.model_dump(mode="json")
    for name, value in obj.items():
        if name in _FLOAT_FIELDS and value is not None:  # numbers are held as floats (ints convert)
            value = [float(x) for x in value] if isinstance(value, list) else float(value)
        assert held[name] == value, name
    assert TrainingSample.from_json(decoded.to_json()) == TrainingSample.from_msgpack(decoded.to_msgpack()) == decoded


class _Undecodable:
    def __repr__(self) -> str:
        return "<undecodable>"


_UNDECODABLE = _Undecodable()


def _as_json(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _UNDECODABLE


def _as_msgpack(data: bytes) -> object:
    """What the bytes hold as plain msgpack; extension types (other than the timestamp) are not plain values."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
    except (ValueError, TypeError, msgpack.UnpackException):  # ValueError covers ExtraData and bad UTF-8
        return _UNDECODABLE
    return _UNDECODABLE if _holds_ext(obj) else obj


def _holds_ext(value: object) -> bool:
    if isinstance(value, msgpack.ExtType):
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_holds_ext(item) for item in children)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.sampled_from([b"\x80", b"{}", b"[]", b"\x81\xa1a\x01", b'{"sample_id":"x"}']))
def test_arbitrary_bytes_are_refused_naming_the_sample_or_its_first_bad_field(data: bytes) -> None:
    assert_refused_or_decoded_exactly(TrainingSample.from_json, data, _as_json(data))
    assert_refused_or_decoded_exactly(TrainingSample.from_msgpack, data, _as_msgpack(data))


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["sample_id", "token_ids", "loss_weights", "mm_refs", "advantages", "sample_weight"])
per_token = st.lists(st.integers(0, 3) | st.floats(-1, 1), min_size=8, max_size=8)
"""Well-typed values as long as the reference sample, so a replaced field is sometimes valid (and accepted)."""


@settings(max_examples=150, deadline=None)
@given(
    st.booleans(),
    st.dictionaries(field_names, json_values | per_token, max_size=6),
)
def test_msgpack_maps_with_fields_replaced_are_refused_naming_the_first_bad_field(
    from_valid: bool, replaced: dict[str, Any]
) -> None:
    """Maps of the sample's fields holding any values, alone or over a valid sample: refused naming the first
    wrong field (or item), or decoded to exactly those values."""
    obj = {**(orjson.loads(sample().to_json()) if from_valid else {}), **replaced}
    data = msgpack.packb(obj, use_bin_type=True)
    assert_refused_or_decoded_exactly(TrainingSample.from_msgpack, data, _as_msgpack(data))
