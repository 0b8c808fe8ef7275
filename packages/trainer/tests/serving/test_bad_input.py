"""Bad input gets the right 4xx naming the field, and the server keeps serving: malformed and tampered refs,
path traversal, SSRF targets, placeholder mismatches, oversized prompts and bodies, bad fields."""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from foveal.renderers.contract import RawImageDescriptor, encode_mmraw
from foveal.renderers.inference.wire import MAX_TOKENIZE_CHARS
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.trainer.serving.testing import RunningServer, start_server

from .conftest import MODEL, generate_body, image_prompt, picture, serve_config

MAX_MODEL_LEN = 512
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def server(server_root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    """http(s) image locations allowed, so the SSRF guard itself is what refuses internal targets."""
    config = serve_config(server_root, max_request_bytes=MAX_REQUEST_BYTES).model_copy(
        update={
            "multimodal": serve_config(server_root).multimodal.model_copy(
                update={"allowed_url_schemes": ["file", "data", "http", "https"]}
            )
        }  # fmt: skip
    )
    with start_server(config, cache_root=tiny_cache_root) as running:
        yield running


@pytest.fixture(scope="module")
def good(renderer: Renderer) -> RenderedConversation:
    return image_prompt(renderer, "What is this?", picture(48, 40, 5))


@pytest.fixture(autouse=True)
def still_serving(server: RunningServer, good: RenderedConversation) -> Iterator[None]:
    """After every bad request the server is healthy and answers a good one."""
    yield
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "state": "serving", "in_flight": 0}
    answer = httpx.post(f"{server.url}/v1/generate", json=generate_body(good, max_tokens=2), timeout=60)
    assert answer.status_code == 200, answer.text


def post(server: RunningServer, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    answer = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    return answer.status_code, answer.json()["error"]


def with_descriptor(good: RenderedConversation, **changes: Any) -> dict[str, Any]:
    """The good request with its image descriptor changed (re-encoded canonically, as a client would)."""
    fields = {**good.images[0].descriptor.model_dump(), **changes}
    return {**generate_body(good, max_tokens=2), "image_refs": [encode_mmraw(RawImageDescriptor(**fields))]}


def raw_ref(obj: Any) -> str:
    return "mmraw:" + base64.urlsafe_b64encode(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).decode()


@pytest.mark.parametrize(
    ("ref", "status", "field"),
    [
        ("not-a-ref", 400, "image_refs[0]"),
        ("mmraw:%%%", 400, "image_refs[0]"),
        ("mmraw:" + base64.urlsafe_b64encode(b"[1, 2]").decode(), 400, "image_refs[0].descriptor"),
        ("mmraw:" + "A" * 20000, 400, "image_refs[0]"),
        (raw_ref({"kind": "foveal.raw_image", "version": 2, "modality": "image"}), 400, "image_refs[0].version"),
    ],
)
def test_malformed_refs_are_400_naming_the_ref(
    server: RunningServer, good: RenderedConversation, ref: str, status: int, field: str
) -> None:
    code, error = post(server, "/v1/generate", {**generate_body(good), "image_refs": [ref]})
    assert (code, error["code"], error["field"]) == (status, "invalid_ref", field)


def test_a_descriptor_smuggling_pixels_is_refused(server: RunningServer, good: RenderedConversation) -> None:
    fields = good.images[0].descriptor.model_dump()
    fields["payload"] = {**fields["payload"], "pixel_values": [[0.0]]}
    code, error = post(server, "/v1/generate", {**generate_body(good), "image_refs": [raw_ref(fields)]})
    assert code == 400 and error["field"] == "image_refs[0].payload.pixel_values"


def test_a_tampered_image_is_422_hash_mismatch(server: RunningServer, renderer: Renderer) -> None:
    tampered = image_prompt(renderer, "Look.", picture(36, 36, 77))
    path = Path(tampered.images[0].descriptor.raw_image_uri.removeprefix("file://"))
    image = Image.open(path).convert("RGB")
    image.putpixel((0, 0), (1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    code, error = post(server, "/v1/generate", generate_body(tampered))
    assert (code, error["code"], error["field"]) == (422, "invalid_ref", "image_refs[0].hash")
    hashes = set(re.findall(r"[0-9a-f]{32}", error["message"]))
    assert hashes <= {tampered.images[0].descriptor.hash}  # the stored file's real hash is not told


def test_a_missing_image_is_404(server: RunningServer, good: RenderedConversation, server_root: Path) -> None:
    gone = "f" * 32
    body = with_descriptor(good, raw_image_uri=(server_root / "store" / "ff" / f"{gone}.png").as_uri(), hash=gone)
    code, error = post(server, "/v1/generate", body)
    assert (code, error["code"], error["field"]) == (404, "not_found", "image_refs[0].raw_image_uri")


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file:///proc/self/environ"])
def test_locations_outside_the_store_are_400(
    server: RunningServer, good: RenderedConversation, uri: str, server_root: Path
) -> None:
    code, error = post(server, "/v1/generate", with_descriptor(good, raw_image_uri=uri))
    assert (code, error["code"], error["field"]) == (400, "invalid_ref", "image_refs[0].raw_image_uri")
    assert uri in error["message"] and str(server_root) not in error["message"]  # the store's path is not told


def test_path_traversal_in_a_ref_is_400(server: RunningServer, good: RenderedConversation, server_root: Path) -> None:
    fields = good.images[0].descriptor.model_dump()
    fields["raw_image_uri"] = f"file://{server_root}/store/../../../etc/passwd"
    code, error = post(server, "/v1/generate", {**generate_body(good), "image_refs": [raw_ref(fields)]})
    assert (code, error["field"]) == (400, "image_refs[0].raw_image_uri")


def test_a_symlink_out_of_the_store_is_400(
    server: RunningServer, good: RenderedConversation, server_root: Path
) -> None:
    link = server_root / "store" / "ab" / ("ab" + "0" * 30 + ".png")
    link.parent.mkdir(exist_ok=True)
    os.symlink("/etc/hostname", link)
    code, error = post(server, "/v1/generate", with_descriptor(good, raw_image_uri=link.as_uri(), hash="ab" + "0" * 30))
    assert (code, error["field"]) == (400, "image_refs[0].raw_image_uri")


def test_a_foreign_layout_fingerprint_is_422(server: RunningServer, good: RenderedConversation) -> None:
    code, error = post(server, "/v1/generate", with_descriptor(good, layout_fingerprint="0123456789abcdef"))
    assert (code, error["field"]) == (422, "image_refs[0].layout_fingerprint")


def test_placeholders_that_disagree_with_the_refs_are_422(server: RunningServer, good: RenderedConversation) -> None:
    image = good.images[0]
    short = list(good.token_ids)
    del short[image.offset]  # one placeholder fewer than the payload says
    code, error = post(server, "/v1/generate", {**generate_body(good), "prompt_token_ids": short})
    assert (code, error["field"]) == (422, "image_refs[0].span")

    stray = [*good.token_ids, good.token_ids[image.offset]]  # a placeholder no ref accounts for
    code, error = post(server, "/v1/generate", {**generate_body(good), "prompt_token_ids": stray})
    assert (code, error["field"]) == (422, "prompt_token_ids")

    extra_ref = {**generate_body(good), "image_refs": generate_body(good)["image_refs"] * 2}
    code, error = post(server, "/v1/generate", extra_ref)
    assert (code, error["field"]) == (422, "image_refs[1]")

    no_ref = {**generate_body(good), "image_refs": []}
    code, error = post(server, "/v1/generate", no_ref)
    assert (code, error["field"]) == (422, "prompt_token_ids")


def test_a_payload_grid_other_than_the_served_processors_is_422(server: RunningServer, renderer: Renderer) -> None:
    wide = image_prompt(renderer, "Wide.", picture(120, 40, 6))
    t, h, w = wide.images[0].descriptor.payload["image_grid_thw"]  # type: ignore[misc]
    assert h != w
    swapped = with_descriptor(wide, payload={**wide.images[0].descriptor.payload, "image_grid_thw": [t, w, h]})
    code, error = post(server, "/v1/generate", swapped)
    assert (code, error["field"]) == (422, "image_refs[0].payload.image_grid_thw")


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:1/secret.png",
        "http://[::1]/x.png",
        "http://10.0.0.1/x.png",
        "http://user:pass@localhost/x.png",
        "gopher://example.com/x",
        "file:///etc/passwd",
        "/etc/passwd",
        "../../etc/passwd",
    ],
)
def test_chat_image_locations_that_are_ssrf_or_traversal_targets_are_400(server: RunningServer, location: str) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": location}}, {"type": "text", "text": "hi"}]}],
    }  # fmt: skip
    code, error = post(server, "/v1/chat/completions", body)
    assert code == 400 and error["code"] == "invalid_ref", error
    assert "user:pass" not in error["message"]  # credentials in URLs are redacted


def test_a_prompt_longer_than_the_context_is_too_long(server: RunningServer) -> None:
    code, error = post(server, "/v1/generate", {"prompt_token_ids": [5] * MAX_MODEL_LEN})
    assert (code, error["code"], error["field"]) == (400, "too_long", "prompt_token_ids")
    body = {"prompt_token_ids": [5] * 100, "sampling": {"max_tokens": MAX_MODEL_LEN - 99}}
    code, error = post(server, "/v1/generate", body)
    assert (code, error["code"], error["field"]) == (400, "too_long", "sampling.max_tokens")


def test_a_body_over_the_limit_is_413(server: RunningServer) -> None:
    answer = httpx.post(f"{server.url}/v1/generate", content=b"x" * (MAX_REQUEST_BYTES + 1))
    assert answer.status_code == 413 and answer.json()["error"] == {
        "code": "too_long", "message": f"request bodies are limited to {MAX_REQUEST_BYTES} bytes", "field": "body"
    }  # fmt: skip

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming too
        for _ in range(MAX_REQUEST_BYTES // 1024 + 2):
            yield b"y" * 1024

    answer = httpx.post(f"{server.url}/v1/generate", content=chunks())
    assert answer.status_code == 413


def test_tokenize_text_is_bounded(server: RunningServer) -> None:
    code, error = post(server, "/v1/tokenize", {"text": "a" * (MAX_TOKENIZE_CHARS + 1)})
    assert (code, error["field"]) == (422, "text")
    assert httpx.post(f"{server.url}/v1/tokenize", json={"text": "a b"}).json()["token_ids"]


def test_control_calls_without_the_token_get_401_before_their_body_is_read(server: RunningServer) -> None:
    for body in (b"{not json", b"x" * (4 * MAX_REQUEST_BYTES)):  # malformed, and far over every cap
        answer = httpx.post(f"{server.url}/control/pause", content=body, timeout=60)
        assert answer.status_code == 401 and answer.json()["error"]["field"] == "Authorization"
    wrong = httpx.post(f"{server.url}/control/resume", headers={"Authorization": f"Bearer {server.token}x"})
    assert wrong.status_code == 401 and server.token not in wrong.text


def test_control_bodies_are_capped_far_below_generation_bodies(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    answer = httpx.post(f"{server.url}/control/pause", content=b" " * (64 * 1024 + 1), headers=headers)
    assert answer.status_code == 413 and answer.json()["error"]["message"].endswith(f"{64 * 1024} bytes")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"prompt_token_ids": [1, 2], "sampling": {"temprature": 0.5}}, 422, "sampling.temprature"),
        ({"prompt_token_ids": []}, 422, "prompt_token_ids"),
        ({"prompt_token_ids": [1, 10**9]}, 400, "prompt_token_ids[1]"),
        ({"prompt_token_ids": [1, -3]}, 400, "prompt_token_ids[1]"),
        ({"prompt_token_ids": [1], "sampling": {"n": 1000}}, 422, "sampling.n"),
        ({"prompt_token_ids": [1], "sampling": {"top_p": 0}}, 422, "sampling.top_p"),
        ({"prompt_token_ids": "1 2 3"}, 422, "prompt_token_ids"),
        ({"prompt_token_ids": [True]}, 422, "prompt_token_ids.0"),
        ({"prompt_token_ids": [1, "5"]}, 422, "prompt_token_ids.1"),
        ({"prompt_token_ids": [1, 5.0]}, 422, "prompt_token_ids.1"),
        ({"prompt_token_ids": [1], "sampling": {"stop_token_ids": [False]}}, 422, "sampling.stop_token_ids.0"),
        ({"prompt_token_ids": [1], "sampling": {"stop_token_ids": list(range(65))}}, 422, "sampling.stop_token_ids"),
        ({"prompt_token_ids": [1], "sampling": {"stop": ["x" * 257]}}, 422, "sampling.stop.0"),
        ({"prompt_token_ids": [1], "sampling": {"stop": [""]}}, 422, "sampling.stop.0"),
    ],
)
def test_bad_fields_are_4xx_naming_the_field(server: RunningServer, body: Any, status: int, field: str) -> None:
    code, error = post(server, "/v1/generate", body)
    assert (code, error["code"], error["field"]) == (status, "invalid_request", field)


def test_bad_detokenize_ids_and_unknown_routes_are_4xx(server: RunningServer) -> None:
    code, error = post(server, "/v1/detokenize", {"token_ids": [1, 99999]})
    assert (code, error["field"]) == (400, "token_ids[1]")
    code, error = post(server, "/v1/detokenize", {"token_ids": [1, True]})
    assert (code, error["field"]) == (422, "token_ids.1")
    answer = httpx.get(f"{server.url}/v1/nothing-here")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
