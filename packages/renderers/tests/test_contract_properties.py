"""Property tests: any valid descriptor survives mmraw, and no input makes the decoder raise anything else
than a ContractError."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath

import orjson
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
from foveal.renderers.errors import ContractError

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


def _only_contract_errors(ref: object) -> None:
    try:
        decode_mmraw(ref)  # type: ignore[arg-type]
    except ContractError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | st.text(max_size=200).map(lambda s: "mmraw:" + s))
def test_random_text_refs_raise_only_contract_errors(ref: str) -> None:
    _only_contract_errors(ref)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_base64_bodies_raise_only_contract_errors(raw: bytes) -> None:
    _only_contract_errors("mmraw:" + base64.urlsafe_b64encode(raw).decode())


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=12), _json_values, max_size=8) | _json_values)
def test_random_json_bodies_raise_only_contract_errors(obj: object) -> None:
    raw = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    _only_contract_errors("mmraw:" + base64.urlsafe_b64encode(raw).decode())


@settings(max_examples=60, deadline=None)
@given(descriptors(), st.data())
def test_mutated_valid_refs_raise_only_contract_errors(desc: RawImageDescriptor, data: st.DataObject) -> None:
    ref = encode_mmraw(desc)
    index = data.draw(st.integers(0, len(ref) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    _only_contract_errors(ref[:index] + replacement + ref[index + 1 :])
