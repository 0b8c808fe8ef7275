"""Property tests: any valid descriptor survives mmraw, and every corrupted ref is refused with the exact error class
and field the contract names (worked out independently by `expected_refusal`); a change that happens to give
another valid descriptor must round-trip."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.contract import (
    RawImageDescriptor,
    decode_mmraw,
    encode_mmraw,
    file_uri_to_path,
    is_processed_tensor_key,
    known_families,
    path_to_file_uri,
)
from foveal.renderers.errors import BadEnvelope, BadRefEncoding, ContractError, DisallowedLocation, UnknownFamily

_segment = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12)
_paths = st.lists(_segment.filter(lambda s: s not in (".", "..")), min_size=1, max_size=5).map(
    lambda parts: PurePosixPath("/", *parts)
)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
_safe_keys = st.text(max_size=10).filter(lambda key: not is_processed_tensor_key(key))


def _no_tensor_keys(value: object) -> bool:
    if isinstance(value, dict):
        return all(not is_processed_tensor_key(k) and _no_tensor_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_no_tensor_keys(v) for v in value)
    return True


@st.composite
def descriptors(draw: st.DrawFn) -> RawImageDescriptor:
    extras = draw(st.dictionaries(_safe_keys, _json_values.filter(_no_tensor_keys), max_size=3))
    payload = {
        **extras,
        "image_grid_thw": draw(st.lists(st.integers(1, 2**31), min_size=3, max_size=3)),
        "num_placeholder_tokens": draw(st.integers(1, 2**31)),
    }
    return RawImageDescriptor(
        raw_image_uri=path_to_file_uri(draw(_paths)),
        hash=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        family=draw(st.sampled_from(sorted(known_families()))),
        layout_fingerprint=draw(st.text("0123456789abcdef", min_size=8, max_size=128)),
        payload=payload,
    )


@settings(max_examples=60, deadline=None)
@given(descriptors())
def test_any_valid_descriptor_round_trips_through_mmraw(desc: RawImageDescriptor) -> None:
    ref = encode_mmraw(desc)
    assert decode_mmraw(ref) == desc
    assert encode_mmraw(decode_mmraw(ref)) == ref


@settings(max_examples=100, deadline=None)
@given(_paths)
def test_any_absolute_path_round_trips_through_a_file_uri(path: PurePosixPath) -> None:
    assert file_uri_to_path(path_to_file_uri(path)) == path


_DECLARED = ("kind", "version", "modality", "raw_image_uri", "hash", "family", "layout_fingerprint", "payload")
_LITERALS = {"kind": "foveal.raw_image", "version": 1, "modality": "image"}
_HEX = frozenset("0123456789abcdef")
Refusal = tuple[type[ContractError], str]


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


def _lower_hex(value: object, low: int, high: int) -> bool:
    return isinstance(value, str) and low <= len(value) <= high and set(value) <= _HEX


def _positive_ints(value: object, count: int) -> bool:
    items = value if isinstance(value, list) and len(value) == count else None
    return items is not None and all(type(x) is int and x > 0 for x in items)


def _field_refusal(name: str, value: object) -> Refusal | None:
    """How one top-level descriptor field must be refused, or None when `value` is valid for it."""
    if name in _LITERALS:
        ok = type(value) is type(_LITERALS[name]) and value == _LITERALS[name]
        return None if ok else (BadEnvelope, name)
    if name == "raw_image_uri":
        if not isinstance(value, str):
            return BadEnvelope, name
        try:  # the URI grammar has its own example tests (test_contract.py); here: the decoder names the field
            file_uri_to_path(value)
        except DisallowedLocation:
            return DisallowedLocation, name
        return None
    if name == "family":
        if not isinstance(value, str):
            return BadEnvelope, name
        return None if value in known_families() else (UnknownFamily, name)
    if name in ("hash", "layout_fingerprint"):
        low, high = (32, 32) if name == "hash" else (8, 128)
        return None if _lower_hex(value, low, high) else (BadEnvelope, name)
    if not isinstance(value, dict):
        return BadEnvelope, "payload"
    if not _positive_ints(value.get("image_grid_thw"), 3):
        return BadEnvelope, "payload.image_grid_thw"
    if not _positive_ints([value.get("num_placeholder_tokens")], 1):
        return BadEnvelope, "payload.num_placeholder_tokens"
    return None


def expected_refusal(ref: str) -> Refusal | None:
    """The error class and field `decode_mmraw(ref)` must raise, worked out from the contract (docs/contract.md
    sections 1-2) with the standard library, orjson and the URI parser; None when `ref` is a valid descriptor."""
    if not ref.startswith("mmraw:"):
        return BadRefEncoding, "ref"
    body = ref[len("mmraw:") :]
    try:
        raw = base64.urlsafe_b64decode(body)
    except ValueError:  # binascii.Error, or non-ASCII text
        return BadRefEncoding, "ref"
    if base64.urlsafe_b64encode(raw).decode() != body:  # only the canonical spelling of these bytes is a ref
        return BadRefEncoding, "ref"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return BadRefEncoding, "ref"
    if not isinstance(obj, dict):
        return BadEnvelope, "descriptor"
    tensor_key = _tensor_key_path(obj, "")
    if tensor_key:
        return BadEnvelope, tensor_key
    missing_envelope = next((name for name in _LITERALS if name not in obj), None)
    if missing_envelope:  # on the wire the envelope has no defaults
        return BadEnvelope, missing_envelope
    for name in _DECLARED:  # then every field in declaration order
        if name not in obj:
            return BadEnvelope, name
        refusal = _field_refusal(name, obj[name])
        if refusal:
            return refusal
    extra = next((key for key in obj if key not in _DECLARED), None)
    if extra is not None:
        return BadEnvelope, extra or "descriptor"
    if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) != raw:
        return BadRefEncoding, "ref"
    return None


def assert_decoded_as_the_contract_says(ref: str) -> None:
    """A refused ref raises exactly the expected class naming the expected field; an accepted one round-trips."""
    expected = expected_refusal(ref)
    if expected is None:
        assert encode_mmraw(decode_mmraw(ref)) == ref
        return
    with pytest.raises(ContractError) as caught:
        decode_mmraw(ref)
    assert (type(caught.value), caught.value.field) == expected, caught.value


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | st.text(max_size=200).map(lambda s: "mmraw:" + s))
def test_random_text_refs_are_refused_naming_the_ref(ref: str) -> None:
    assert_decoded_as_the_contract_says(ref)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_base64_bodies_are_refused_as_bad_encodings_or_envelopes(raw: bytes) -> None:
    assert_decoded_as_the_contract_says("mmraw:" + base64.urlsafe_b64encode(raw).decode())


_replacements = st.dictionaries(st.sampled_from(_DECLARED) | st.text(max_size=12), _json_values, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), _json_values, max_size=8)
    | _json_values
    | st.tuples(descriptors(), _replacements, st.booleans()).map(
        lambda d: {**(d[0].model_dump(mode="json") if d[2] else {}), **d[1]}
    )
)
def test_random_json_bodies_are_refused_naming_the_first_bad_field(obj: object) -> None:
    """Any JSON, and valid descriptors with fields replaced or added: the refusal names the first wrong field."""
    raw = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    assert_decoded_as_the_contract_says("mmraw:" + base64.urlsafe_b64encode(raw).decode())


@settings(max_examples=100, deadline=None)
@given(descriptors(), st.data())
def test_a_valid_ref_with_one_character_changed_is_refused_naming_the_field_or_round_trips(
    desc: RawImageDescriptor, data: st.DataObject
) -> None:
    ref = encode_mmraw(desc)
    index = data.draw(st.integers(0, len(ref) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    assert_decoded_as_the_contract_says(ref[:index] + replacement + ref[index + 1 :])


def test_every_one_character_change_of_a_ref_gets_the_refusal_the_contract_names() -> None:
    """Exhaustive over positions and a spread of base64 letters: the expected refusals reach the fields, not only
    the encoding, so the property above is checked where it matters."""
    ref = encode_mmraw(
        RawImageDescriptor(
            raw_image_uri="file:///store/ab/ab.png",
            hash="ab" * 16,
            family=sorted(known_families())[0],
            layout_fingerprint="cd" * 8,
            payload={"image_grid_thw": [1, 4, 4], "num_placeholder_tokens": 4},
        )
    )
    outcomes: set[tuple[str, str]] = set()
    for index in range(len("mmraw:"), len(ref)):
        for replacement in "AQgw09-_=":
            changed = ref[:index] + replacement + ref[index + 1 :]
            assert_decoded_as_the_contract_says(changed)
            error, field = expected_refusal(changed) or (None, "accepted")
            outcomes.add((getattr(error, "__name__", "-"), field))
    assert {
        ("BadRefEncoding", "ref"),
        ("BadEnvelope", "kind"),
        ("BadEnvelope", "version"),
        ("DisallowedLocation", "raw_image_uri"),
        ("BadEnvelope", "hash"),
        ("UnknownFamily", "family"),
        ("BadEnvelope", "layout_fingerprint"),
        ("BadEnvelope", "payload.image_grid_thw"),
        ("BadEnvelope", "payload.num_placeholder_tokens"),
        ("-", "accepted"),
    } <= outcomes
