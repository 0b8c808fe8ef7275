"""The raw descriptor and its mmraw ref: round trip, size, and one typed error per malformed input."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from foveal.renderers.layout import family_names
from foveal.renderers.contract import (
    MAX_REF_CHARS,
    RawImageDescriptor,
    canonical_json,
    decode_mmraw,
    descriptor_from_obj,
    encode_mmraw,
    known_families,
)
from foveal.renderers.errors import (
    BadEnvelope,
    BadRefEncoding,
    ContractError,
    DisallowedLocation,
    UnknownFamily,
)

HASH = "0123456789abcdef0123456789abcdef"
LONG_STORE_URI = (
    "file:///mnt/shared/foveal/runs/2026-11-22-qwen3-vl-8b-sft-long-context-experiment-0042/assets/01/"
    f"{HASH}.png"
)


def _obj(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "foveal.raw_image",
        "version": 1,
        "modality": "image",
        "raw_image_uri": f"file:///store/01/{HASH}.png",
        "hash": HASH,
        "family": "qwen2_vl",
        "layout_fingerprint": "9f86d081884c7d65",
        "payload": {"image_grid_thw": [1, 16, 22], "num_placeholder_tokens": 88},
    }
    obj.update(changes)
    return {key: value for key, value in obj.items() if value is not _DROP}


class _Drop:
    """A removed-field marker whose repr is stable, so xdist workers collect identical test ids."""

    def __repr__(self) -> str:
        return "<drop>"


_DROP = _Drop()


def _ref(obj: Any) -> str:
    return "mmraw:" + base64.urlsafe_b64encode(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).decode()


def _raw_ref(raw: bytes) -> str:
    return "mmraw:" + base64.urlsafe_b64encode(raw).decode()


def test_descriptor_round_trips_through_mmraw() -> None:
    desc = descriptor_from_obj(_obj())
    ref = encode_mmraw(desc)
    assert ref.startswith("mmraw:")
    assert decode_mmraw(ref) == desc


def test_encoding_is_canonical_sorted_json() -> None:
    desc = descriptor_from_obj(_obj(payload={"num_placeholder_tokens": 88, "image_grid_thw": [1, 16, 22], "b": 1}))
    raw = base64.urlsafe_b64decode(encode_mmraw(desc)[len("mmraw:") :])
    assert raw == orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    assert raw.index(b'"family"') < raw.index(b'"hash"') < raw.index(b'"kind"')
    assert raw.index(b'"b"') < raw.index(b'"image_grid_thw"')


def test_typical_descriptor_is_at_most_one_kib() -> None:
    desc = descriptor_from_obj(_obj(raw_image_uri=LONG_STORE_URI, layout_fingerprint="ab" * 32))
    assert len(canonical_json(desc)) <= 1024
    assert len(encode_mmraw(desc)) <= 1400


def test_defaults_fill_the_envelope() -> None:
    desc = RawImageDescriptor(
        raw_image_uri=f"file:///s/{HASH}.png",
        hash=HASH,
        family="qwen3_vl",
        layout_fingerprint="deadbeef",
        payload={"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1},
    )
    assert (desc.kind, desc.version, desc.modality) == ("foveal.raw_image", 1, "image")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "mmrow:" + _b64(b"{}"),
        _b64(orjson.dumps(_obj())),
        "MMRAW:" + _b64(orjson.dumps(_obj())),
    ],
    ids=["empty", "typo-prefix", "no-prefix", "uppercase-prefix"],
)
def test_ref_without_the_mmraw_prefix_is_bad_encoding(ref: str) -> None:
    with pytest.raises(BadRefEncoding) as info:
        decode_mmraw(ref)
    assert info.value.field == "ref"


@pytest.mark.parametrize(
    "body",
    ["abc", "ab+/", "ab/c", "YWJj ", "YW\nJj", "YQ", "YR==", "Y===", "=YWJ", "YWJj\u00e9"],
    ids=["unpadded", "std-plus-slash", "slash", "space", "newline", "missing-padding", "nonzero-tail-bits",
         "overpadded", "leading-pad", "non-ascii"],
)
def test_ref_that_is_not_strict_urlsafe_base64_is_bad_encoding(body: str) -> None:
    with pytest.raises(BadRefEncoding) as info:
        decode_mmraw("mmraw:" + body)
    assert info.value.field == "ref"


@pytest.mark.parametrize(
    "raw", [b"not json", b"\xff\xfe", b"{", b'{"a": 1}}'], ids=["text", "bad-utf8", "open", "trailing"]
)
def test_ref_body_that_is_not_json_is_bad_encoding(raw: bytes) -> None:
    with pytest.raises(BadRefEncoding) as info:
        decode_mmraw(_raw_ref(raw))
    assert info.value.field == "ref"


@pytest.mark.parametrize("raw", [b"[1,2]", b'"text"', b"null", b"3"])
def test_json_that_is_not_an_object_is_bad_envelope(raw: bytes) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_raw_ref(raw))
    assert info.value.field == "descriptor"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "foveal.raw_video"}, "kind"),
        ({"kind": 1}, "kind"),
        ({"version": 2}, "version"),
        ({"version": True}, "version"),
        ({"version": 1.0}, "version"),
        ({"version": "1"}, "version"),
        ({"modality": "video"}, "modality"),
        ({"hash": _DROP}, "hash"),
        ({"payload": _DROP}, "payload"),
        ({"raw_image_uri": _DROP}, "raw_image_uri"),
        ({"kind": _DROP}, "kind"),
        ({"extra": 1}, "extra"),
        ({"family": 7}, "family"),
    ],
    ids=lambda value: str(value),
)
def test_wrong_envelope_or_missing_or_extra_field_is_bad_envelope(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_ref(_obj(**changes)))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pixel_values": [[0.0]]}, "pixel_values"),
        ({"image_embeds": [0.5]}, "image_embeds"),
        ({"payload": {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1, "pixel_values": [1.0]}},
         "payload.pixel_values"),
        ({"payload": {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1, "extra": {"image_features": []}}},
         "payload.extra.image_features"),
        ({"payload": {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1,
                      "frames": [{"ok": 1}, {"pixel_values_videos": []}]}},
         "payload.frames.1.pixel_values_videos"),
        ({"payload": {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1, "vision_embeds": None}},
         "payload.vision_embeds"),
    ],
    ids=["top-pixel-values", "top-embeds", "payload", "nested-dict", "nested-list", "suffix-rule"],
)
def test_processed_tensors_anywhere_are_bad_envelope(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_ref(_obj(**changes)))
    assert info.value.field == field
    assert "tensor" in info.value.expected


def test_unknown_family_is_rejected_with_its_own_error() -> None:
    with pytest.raises(UnknownFamily) as info:
        decode_mmraw(_ref(_obj(family="llava_next")))
    assert (info.value.field, info.value.value) == ("family", "llava_next")


def test_every_layout_family_is_a_known_descriptor_family() -> None:
    assert known_families() == frozenset(family_names())
    for family in family_names():
        assert decode_mmraw(_ref(_obj(family=family))).family == family


@pytest.mark.parametrize("bad", [HASH.upper(), HASH[:-1], HASH + "0", "g" * 32, "", 12])
def test_bad_hash_format_is_bad_envelope(bad: Any) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_ref(_obj(hash=bad)))
    assert info.value.field == "hash"


@pytest.mark.parametrize("bad", ["", "xyz", "ABCDEF12", "abc", "a" * 130])
def test_bad_layout_fingerprint_is_bad_envelope(bad: str) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_ref(_obj(layout_fingerprint=bad)))
    assert info.value.field == "layout_fingerprint"


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/a.png",
        "https://127.0.0.1/a.png",
        "/store/a.png",
        "store/a.png",
        "file://host/store/a.png",
        "file://localhost/store/a.png",
        "file:/store/a.png",
        "file:///store/../etc/passwd",
        "file:///store/%2e%2e/etc/passwd",
        "file:///store/./a.png",
        "file:///store//a.png",
        "file:///store/a.png?x=1",
        "file:///store/a.png#frag",
        "file:///store/a%00.png",
        "file:///store/a%zz.png",
        "file:///store/%ff.png",
        "file:///store/a b.png",
        "file:///" + "a" * 5000,
    ],
)
def test_non_file_or_loose_uri_is_disallowed_location(uri: str) -> None:
    with pytest.raises(DisallowedLocation) as info:
        decode_mmraw(_ref(_obj(raw_image_uri=uri)))
    assert info.value.field == "raw_image_uri"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [1, 2], "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [1, 0, 2], "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [1, -2, 2], "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [True, 2, 2], "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [1.0, 2, 2], "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": "1,2,2", "num_placeholder_tokens": 4}, "payload.image_grid_thw"),
        ({"image_grid_thw": [1, 2, 2]}, "payload.num_placeholder_tokens"),
        ({"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 0}, "payload.num_placeholder_tokens"),
        ({"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": True}, "payload.num_placeholder_tokens"),
        ({"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 4.0}, "payload.num_placeholder_tokens"),
        ({"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": "4"}, "payload.num_placeholder_tokens"),
    ],
)
def test_payload_without_valid_layout_facts_is_bad_envelope(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode_mmraw(_ref(_obj(payload=payload)))
    assert info.value.field == field


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(_obj()),  # keys in insertion order, not sorted
        orjson.dumps(_obj(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2),
        orjson.dumps(_obj(), option=orjson.OPT_SORT_KEYS).replace(
            b'"family":"qwen2_vl"', b'"family":"qwen2_vl","family":"qwen2_vl"'
        ),
    ],
    ids=["unsorted", "whitespace", "duplicate-key"],
)
def test_non_canonical_json_is_bad_encoding(raw: bytes) -> None:
    assert orjson.loads(raw) == _obj()
    with pytest.raises(BadRefEncoding) as info:
        decode_mmraw(_raw_ref(raw))
    assert info.value.field == "ref"


def test_oversized_ref_is_refused_before_decoding() -> None:
    with pytest.raises(BadRefEncoding) as info:
        decode_mmraw("mmraw:" + "A" * MAX_REF_CHARS)
    assert info.value.field == "ref"
    assert "chars" in str(info.value.value)


@pytest.mark.parametrize("ref", [None, b"mmraw:e30=", 12])
def test_non_string_ref_is_bad_encoding(ref: Any) -> None:
    with pytest.raises(BadRefEncoding):
        decode_mmraw(ref)


def test_encode_refuses_a_descriptor_too_big_to_decode() -> None:
    big = {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1, "notes": "x" * MAX_REF_CHARS}
    desc = RawImageDescriptor.model_validate(_obj(payload=big))
    with pytest.raises(BadRefEncoding):
        encode_mmraw(desc)


@pytest.mark.parametrize(
    ("value", "field"),
    [(math.nan, "payload.x"), (math.inf, "payload.x"), ([2**70], "payload.x.0"), ({"y": -(2**64)}, "payload.x.y")],
)
def test_numbers_json_cannot_carry_exactly_are_bad_envelope(value: Any, field: str) -> None:
    payload = {"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1, "x": value}
    with pytest.raises(BadEnvelope) as info:
        descriptor_from_obj(_obj(payload=payload))
    assert info.value.field == field


def test_direct_construction_with_bad_input_raises_validation_error() -> None:
    with pytest.raises(ValidationError):
        RawImageDescriptor.model_validate(_obj(family="nope"))


def test_descriptor_nested_in_another_model_maps_to_dotted_contract_error() -> None:
    from foveal.renderers.contract import contract_error_from_validation

    class Sample(BaseModel):
        image: RawImageDescriptor

    cases = [
        (_obj(family="nope"), UnknownFamily, "sample.image.family"),
        (_obj(payload={"image_grid_thw": [1, 2]}), BadEnvelope, "sample.image.payload.image_grid_thw"),
        (_obj(hash=_DROP), BadEnvelope, "sample.image.hash"),
    ]
    for obj, error_type, field in cases:
        with pytest.raises(ValidationError) as info:
            Sample.model_validate({"image": obj})
        error = contract_error_from_validation(info.value, prefix="sample")
        assert isinstance(error, error_type)
        assert error.field == field


def test_a_re_rooted_error_keeps_its_value_and_expectation_and_a_rootless_one_names_the_descriptor() -> None:
    from foveal.renderers.contract import contract_error_from_validation, known_families

    class Sample(BaseModel):
        image: RawImageDescriptor

    with pytest.raises(ValidationError) as info:
        Sample.model_validate({"image": _obj(family="nope")})
    error = contract_error_from_validation(info.value, prefix="sample")
    assert (error.field, error.value, error.expected) == (
        "sample.image.family", "nope", f"one of {sorted(known_families())}")  # fmt: skip
    with pytest.raises(ValidationError) as info:
        RawImageDescriptor.model_validate("not an object")
    assert contract_error_from_validation(info.value).field == "descriptor"


def test_every_decode_error_is_a_contract_error_with_an_http_status() -> None:
    refs = ["x", "mmraw:abc", _raw_ref(b"[]"), _ref(_obj(family="nope")), _ref(_obj(raw_image_uri="http://a/b"))]
    for ref in refs:
        with pytest.raises(ContractError) as info:
            decode_mmraw(ref)
        assert 400 <= info.value.http_status < 500
