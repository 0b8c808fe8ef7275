"""Wire-level checks over HTTP: API key, body limit, field-named 4xx answers, image contract, and the
protobuf codec against the SDK's own encoder and decoder. The server keeps serving after every refusal."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto
from tinker.proto.response_conv import deserialize_forward_backward_output, deserialize_sample_response

from foveal.trainer.tinker_service.protowire import SampledOut, forward_backward_output, parse_forward_backward, sample_response

from .conftest import API_KEY, RunningService, shape_example

HEADERS = {"X-API-Key": API_KEY}


def _session(client: httpx.Client) -> str:
    answer = client.post("/api/v1/create_session", json={"tags": [], "user_metadata": None, "sdk_version": "0.38.0"})
    assert answer.status_code == 200
    return answer.json()["session_id"]


def _sampler(client: httpx.Client, service: RunningService) -> str:
    body = {"session_id": _session(client), "sampling_session_seq_id": 0, "base_model": str(service.model_dir)}
    return client.post("/api/v1/create_sampling_session", json=body).json()["sampling_session_id"]


def _sample_body(sampler: str, chunks: list[dict[str, object]]) -> dict[str, object]:
    return {"sampling_session_id": sampler, "seq_id": 0, "num_samples": 1, "prompt": {"chunks": chunks},
            "sampling_params": {"max_tokens": 2}}  # fmt: skip


def test_every_route_requires_the_api_key(tinker_service: RunningService) -> None:
    with httpx.Client(base_url=tinker_service.url) as client:
        assert client.get("/api/v1/healthz").status_code == 401
        wrong = client.get("/api/v1/healthz", headers={"X-API-Key": API_KEY + "x"})
        assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "X-API-Key"
        assert API_KEY not in wrong.text
        assert client.post("/api/v1/create_session", json={}).status_code == 401
        assert client.get("/api/v1/healthz", headers=HEADERS).json() == {"status": "ok"}


def test_no_page_or_parse_error_is_served_without_the_key(tinker_service: RunningService) -> None:
    with httpx.Client(base_url=tinker_service.url) as client:
        for path in ("/docs", "/openapi.json", "/redoc", "/nowhere"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=HEADERS).status_code == 404
        malformed = client.post("/api/v1/create_session", content=b"{not json" * 100_000)
        assert malformed.status_code == 401 and malformed.json()["error"]["field"] == "X-API-Key"
        small_route = client.post("/api/v1/create_session", content=b" " * (2**20 + 1), headers=HEADERS)
        assert small_route.status_code == 413


def test_oversized_bodies_are_refused_before_parsing(tinker_service: RunningService) -> None:
    with httpx.Client(base_url=tinker_service.url, headers=HEADERS) as client:
        big = client.post("/api/v1/telemetry", content=b"x" * (3 * 2**20))
        assert big.status_code == 413 and big.json()["error"]["field"] == "body"
        assert client.get("/api/v1/healthz").status_code == 200


def test_bad_fields_get_a_4xx_naming_the_field(tinker_service: RunningService) -> None:
    with httpx.Client(base_url=tinker_service.url, headers=HEADERS) as client:
        session = _session(client)
        wrong_model = client.post("/api/v1/create_model", json={
            "session_id": session, "model_seq_id": 0, "base_model": "other/model", "lora_config": {"rank": 4}})  # fmt: skip
        assert wrong_model.status_code == 400 and wrong_model.json()["error"]["field"] == "base_model"
        bad_rank = client.post("/api/v1/create_model", json={
            "session_id": session, "model_seq_id": 0, "base_model": "x", "lora_config": {"rank": 0}})  # fmt: skip
        assert bad_rank.status_code == 422 and bad_rank.json()["error"]["field"] == "lora_config.rank"
        garbage = client.post("/api/v1/forward_backward", content=b"\xff\xff\xff", headers={"Content-Type": "application/x-protobuf"})
        assert garbage.status_code == 400 and garbage.json()["error"]["field"] == "body"
        unknown = client.post("/api/v1/retrieve_future", json={"request_id": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "request_id"
        assert client.get("/api/v1/healthz").status_code == 200


def test_forward_backward_checks_loss_inputs_and_image_tokens(tinker_service: RunningService) -> None:
    png, _ = shape_example(0)
    with httpx.Client(base_url=tinker_service.url, headers=HEADERS) as client:
        session = _session(client)
        created = client.post("/api/v1/create_model", json={
            "session_id": session, "model_seq_id": 0, "base_model": str(tinker_service.model_dir), "lora_config": {"rank": 2}})  # fmt: skip
        model_id = created.json()["model_id"]

        def post(datum: types.Datum) -> httpx.Response:
            request = types.ForwardBackwardRequest(
                forward_backward_input=types.ForwardBackwardInput(data=[datum], loss_fn="cross_entropy"),
                model_id=model_id, seq_id=1,
            )  # fmt: skip
            body = forward_backward_request_to_proto(request).SerializeToString()
            return client.post("/api/v1/forward_backward", content=body, headers={"Content-Type": "application/x-protobuf"})

        short = post(types.Datum(model_input=types.ModelInput.from_ints([1, 2, 3]), loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]}))
        assert short.status_code == 400 and short.json()["error"]["field"] == "data[0].loss_fn_inputs.target_tokens"
        image = types.ImageChunk(data=png, format="png", expected_tokens=3)
        wrong = post(types.Datum(model_input=types.ModelInput(chunks=[image]), loss_fn_inputs={"target_tokens": [0] * 3, "weights": [0.0] * 3}))
        assert wrong.status_code in (400, 422)
        assert wrong.json()["error"]["field"] == "data[0].model_input.chunks[0].expected_tokens"
        assert client.get("/api/v1/healthz").status_code == 200


def test_asset_pointers_are_read_only_under_the_allowed_roots(tinker_service: RunningService, tmp_path) -> None:
    png, _ = shape_example(1)
    outside = tmp_path / "outside.png"
    outside.write_bytes(png)
    inside = tinker_service.allowed_root / "inside.png"
    inside.write_bytes(png)
    with httpx.Client(base_url=tinker_service.url, headers=HEADERS) as client:
        sampler = _sampler(client, tinker_service)
        for location in (str(outside), "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):
            pointer = {"type": "image_asset_pointer", "location": location, "format": "png"}
            refused = client.post("/api/v1/asample", json=_sample_body(sampler, [pointer]))
            assert 400 <= refused.status_code < 500, (location, refused.text)
            field = refused.json()["error"]["field"]
            assert field.startswith("prompt.") and "location" in field, field
        pointer = {"type": "image_asset_pointer", "location": str(inside), "format": "png"}
        accepted = client.post("/api/v1/asample", json=_sample_body(sampler, [{"type": "encoded_text", "tokens": [1]}, pointer]))
        assert accepted.status_code == 200, accepted.text
        result = client.post("/api/v1/retrieve_future", json={"request_id": accepted.json()["request_id"]})
        assert result.headers["content-type"] == "application/x-protobuf"
        assert len(deserialize_sample_response(result.content).sequences) == 1


def test_protobuf_codec_round_trips_with_the_sdk() -> None:
    datum = types.Datum(
        model_input=types.ModelInput(chunks=[types.EncodedTextChunk(tokens=[4, 5]), types.ImageChunk(data=b"\x89PNG", format="png", expected_tokens=4)]),
        loss_fn_inputs={"target_tokens": [5, 6, 7, 8, 9, 1], "advantages": np.arange(6, dtype=np.float32)},
    )
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(data=[datum], loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.7}),
        model_id="m", seq_id=3,
    )  # fmt: skip
    parsed = parse_forward_backward(forward_backward_request_to_proto(request).SerializeToString())
    assert (parsed.model_id, parsed.seq_id, parsed.loss_fn, parsed.loss_fn_config) == ("m", 3, "ppo", {"clip_low_threshold": 0.7})
    chunks = parsed.data[0].model_input.chunks
    assert chunks[0].tokens == (4, 5) and chunks[1].data == b"\x89PNG" and chunks[1].expected_tokens == 4
    assert parsed.data[0].loss_fn_inputs["target_tokens"].tolist() == [5, 6, 7, 8, 9, 1]
    assert parsed.data[0].loss_fn_inputs["advantages"].tolist() == [0, 1, 2, 3, 4, 5]

    outputs = [{"logprobs": np.array([-1.0, -2.0], dtype=np.float32)}, {"logprobs": np.array([-0.5], dtype=np.float32)}]
    decoded = deserialize_forward_backward_output(forward_backward_output(outputs, {"loss:sum": 3.5}))
    assert decoded.metrics == {"loss:sum": 3.5}
    assert [out["logprobs"].tolist() for out in decoded.loss_fn_outputs] == [[-1.0, -2.0], [-0.5]]
    sampled = deserialize_sample_response(sample_response([SampledOut((7, 8), (-0.25, -0.5), "length")], [float("nan"), -1.5]))
    assert sampled.sequences[0].tokens == [7, 8] and sampled.sequences[0].logprobs == [-0.25, -0.5]
    assert sampled.sequences[0].stop_reason == "length"


@pytest.mark.parametrize("key", ["", "tml-short", "sk-0123456789abcdef0123"])
def test_the_service_refuses_keys_the_sdk_would_not_send(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from foveal.configs.tinker_service import TinkerServiceSection
    from foveal.trainer.tinker_service.command import ApiKeyError, read_api_key

    monkeypatch.setenv("FOVEAL_TINKER_API_KEY", key)
    with pytest.raises(ApiKeyError, match="tinker.api_key_env"):
        read_api_key(TinkerServiceSection())



def test_serve_tinker_without_its_key_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foveal.configs.cli import main

    monkeypatch.delenv("FOVEAL_TINKER_API_KEY", raising=False)
    assert main(["serve-tinker"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "foveal serve-tinker: error: tinker.api_key_env: FOVEAL_TINKER_API_KEY is not set: "
        "export FOVEAL_TINKER_API_KEY=tml-... or set tinker.api_key_file\n"
    )
