"""Images the store keeps verbatim (a plain JPEG/PNG's source bytes) read back right at train and serve time:
the same pixels as the canonical PNG path, and a file whose header is fine but whose pixel data is not is
refused with a typed error (the materializer's policy applies; the server answers 4xx and keeps serving)."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
import xxhash
from PIL import Image

from foveal.configs import MultimodalConfig
from foveal.renderers.errors import ImageRejected
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.mm_refs import build_mm_refs
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.serving.testing import RunningServer

from .conftest import FAMILY, generate_body, image_prompt, picture


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def corrupt_png(width: int, height: int) -> bytes:
    """Every chunk well formed (right CRCs, IEND last), so the store keeps it; the IDAT is not zlib data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"\x78\x9c" + bytes(200)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_copy(store: ImageStore, rendered: RenderedConversation) -> RenderedConversation:
    """The prompt with its image replaced by the stored file cut short (valid header, missing pixel data),
    planted in the store under its own hash and extension, as a crash or a bad copy would leave it."""
    descriptor = rendered.images[0].descriptor
    data = Path(descriptor.raw_image_uri.removeprefix("file://")).read_bytes()
    cut = data[: len(data) * 2 // 3]
    digest = xxhash.xxh3_128_hexdigest(cut)
    path = store.path_for(digest, descriptor.raw_image_uri.rpartition(".")[2])
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(cut)
    moved = descriptor.model_copy(update={"raw_image_uri": path.as_uri(), "hash": digest})
    return dataclasses.replace(rendered, images=(dataclasses.replace(rendered.images[0], descriptor=moved),))


def training_sample(rendered: RenderedConversation, image_token_id: int) -> TrainingSample:
    spans = [(image.descriptor, (image.offset, image.length)) for image in rendered.images]
    refs = build_mm_refs(rendered.token_ids, spans, image_token_id, sample_id="s")
    weights = [1.0] * len(rendered.token_ids)
    return TrainingSample(sample_id="s", token_ids=rendered.token_ids, loss_weights=weights, mm_refs=refs)


@pytest.fixture(scope="module")
def materializer(tiny_model_dir: Callable[[str], Path], renderer: Renderer, client_store: ImageStore) -> Materializer:
    family = renderer.images.spec.family
    return Materializer.from_pretrained(tiny_model_dir(FAMILY), family, client_store, MultimodalConfig())


def render_source(renderer: Renderer, source: object) -> RenderedConversation:
    content = [{"type": "image", "image": source}, {"type": "text", "text": "What is this?"}]
    return renderer.render([{"role": "user", "content": content}], add_generation_prompt=True)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_verbatim_file_materializes_to_the_canonical_paths_pixels(
    renderer: Renderer, materializer: Materializer, fmt: str
) -> None:
    data = encoded(picture(90, 60, 3), fmt)
    verbatim = render_source(renderer, data)
    canonical = render_source(renderer, Image.open(io.BytesIO(data)).convert("RGB"))  # PIL: canonical PNG
    suffixes = [r.images[0].descriptor.raw_image_uri.rpartition(".")[2] for r in (verbatim, canonical)]
    assert suffixes == [{"JPEG": "jpg", "PNG": "png"}[fmt], "png"]
    assert verbatim.images[0].descriptor.hash != canonical.images[0].descriptor.hash
    assert verbatim.images[0].descriptor.payload == canonical.images[0].descriptor.payload
    outs = [materializer.materialize(training_sample(r, renderer.image_token_id)) for r in (verbatim, canonical)]
    assert torch.equal(outs[0].pixel_kwargs["pixel_values"], outs[1].pixel_kwargs["pixel_values"])
    assert outs[0].pixel_kwargs["image_grid_thw"].tolist() == outs[1].pixel_kwargs["image_grid_thw"].tolist()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_verbatim_file_is_refused_at_materialization(
    renderer: Renderer, client_store: ImageStore, materializer: Materializer, fmt: str
) -> None:
    damaged = truncated_copy(client_store, render_source(renderer, encoded(picture(120, 80, 4), fmt)))
    sample = training_sample(damaged, renderer.image_token_id)
    with pytest.raises(ImageRejected) as caught:
        materializer.materialize(sample)
    assert caught.value.field == "sample 's'.mm_refs[0].descriptor.image.data"
    lenient = Materializer(materializer.adapter, client_store, missing_image_policy="placeholder_zero_loss")
    out = lenient.materialize(sample)
    assert (out.sample_weight, out.missing_images) == (0.0, (0,)) and not out.loss_weights.any()
    assert not out.pixel_kwargs["pixel_values"].any() and lenient.metrics.snapshot()["replaced.ImageRejected"] == 1


def test_well_formed_png_with_corrupt_pixel_data_is_stored_then_refused(
    renderer: Renderer, materializer: Materializer
) -> None:
    rendered = render_source(renderer, corrupt_png(56, 56))
    assert rendered.images[0].descriptor.raw_image_uri.endswith(".png")
    with pytest.raises(ImageRejected) as caught:
        materializer.materialize(training_sample(rendered, renderer.image_token_id))
    assert caught.value.field.endswith("image.data")


@pytest.fixture
def still_serving(server: RunningServer, renderer: Renderer) -> Iterator[None]:
    yield
    good = image_prompt(renderer, "Still there?", picture(48, 40, 5))
    answer = httpx.post(f"{server.url}/v1/generate", json=generate_body(good, max_tokens=2), timeout=60)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_server_answers_verbatim_images_and_refuses_truncated_ones_with_422(
    server: RunningServer, renderer: Renderer, client_store: ImageStore, still_serving: None, fmt: str
) -> None:
    rendered = render_source(renderer, encoded(picture(100, 70, 6), fmt))
    answer = httpx.post(f"{server.url}/v1/generate", json=generate_body(rendered, max_tokens=2), timeout=60)
    assert answer.status_code == 200, answer.text
    damaged = truncated_copy(client_store, rendered)
    answer = httpx.post(f"{server.url}/v1/generate", json=generate_body(damaged, max_tokens=2), timeout=60)
    error = answer.json()["error"]
    assert (answer.status_code, error["field"]) == (422, "image_refs[0].image.data"), answer.text


def test_server_refuses_a_ref_to_a_corrupt_png_with_422(
    server: RunningServer, renderer: Renderer, still_serving: None
) -> None:
    rendered = render_source(renderer, corrupt_png(56, 56))
    answer = httpx.post(f"{server.url}/v1/generate", json=generate_body(rendered, max_tokens=2), timeout=60)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "image_refs[0].image.data", answer.text
