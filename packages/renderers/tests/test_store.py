"""The content-addressed store: layout, de-duplication, atomic writes, and verified reads."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers import atomic_files as writer_module
from foveal.renderers.contract import RawImageDescriptor, decode_mmraw, encode_mmraw
from foveal.renderers.errors import BadEnvelope, DisallowedLocation, HashMismatch, ImageRejected, MissingAsset
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.layout import LayoutSpec, compute_layout
from foveal.renderers.store import ImageStore


def _image(seed: int = 0, size: tuple[int, int] = (16, 12)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "assets", MultimodalConfig())


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".png") or p.name.endswith(".tmp")]


def test_put_writes_the_contract_layout(store: ImageStore) -> None:
    stored = store.put(_image())
    assert stored.path == store.root / stored.hash[:2] / f"{stored.hash}.png"
    assert stored.uri == f"file://{stored.path}"
    data = stored.path.read_bytes()
    assert xxhash.xxh3_128_hexdigest(data) == stored.hash
    assert (stored.width, stored.height, stored.size_bytes) == (16, 12, len(data))
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o644
    assert _leftovers(store.root) == []


def test_same_stored_bytes_from_different_sources_are_stored_once(store: ImageStore, tmp_path: Path) -> None:
    image = _image()
    first = store.put(image)  # a PIL image: normalized to the canonical PNG
    before = first.path.stat()
    again = [store.put(_encoded(image, "BMP")), store.put(first.path), store.put(first.path.read_bytes())]
    assert {s.hash for s in again} == {first.hash}
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(list(store.root.rglob("*.png"))) == 1


def test_second_put_does_not_write(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(_image())

    def no_writes(*args: object) -> None:
        raise AssertionError("a de-duplicated put wrote a file")

    monkeypatch.setattr(writer_module.tempfile, "mkstemp", no_writes)
    store.put(_image())


def test_corrupt_existing_file_is_repaired_by_put(store: ImageStore) -> None:
    stored = store.put(_image())
    stored.path.write_bytes(b"garbage")
    store.put(_image())
    assert store.read_verified(stored.uri, stored.hash) == stored.path.read_bytes()


def test_planted_symlink_at_the_final_name_is_replaced_by_a_real_file(store: ImageStore, tmp_path: Path) -> None:
    image = _image()
    outside = tmp_path / "outside.png"
    outside.write_bytes(store.put(image).path.read_bytes())
    stored_path = store.put(image).path
    stored_path.unlink()
    stored_path.symlink_to(outside)
    stored = store.put(image)
    assert not stored.path.is_symlink()
    assert store.read_verified(stored.uri, stored.hash) == outside.read_bytes()


def test_different_images_get_different_files(store: ImageStore) -> None:
    hashes = {store.put(_image(seed)).hash for seed in range(5)}
    assert len(hashes) == 5
    assert len(list(store.root.rglob("*.png"))) == 5


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_write_leaves_no_file_and_no_temp(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(writer_module.os, "fdopen", lambda fd, mode: _FailingFile(fd))
    else:
        monkeypatch.setattr(writer_module.os, failing, boom)
    with pytest.raises(OSError):
        store.put(_image())
    assert list(store.root.rglob("*.png")) == []
    assert _leftovers(store.root) == []


class _FailingFile(io.FileIO):
    def __init__(self, fd: int) -> None:
        super().__init__(fd, "wb")

    def write(self, data: object) -> int:
        super().write(b"partial")
        raise OSError(5, "I/O error")


def test_read_verified_returns_the_stored_bytes(store: ImageStore) -> None:
    stored = store.put(_image())
    assert store.read_verified(stored.uri, stored.hash) == stored.path.read_bytes()
    image = store.open_verified(stored.uri, stored.hash)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(_image()))


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "replace"])
def test_tampered_or_truncated_file_is_a_hash_mismatch(store: ImageStore, damage: str) -> None:
    stored = store.put(_image())
    data = bytearray(stored.path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "append":
        data += b"\0"
    else:
        data = bytearray(store.put(_image(seed=9)).path.read_bytes())
    stored.path.write_bytes(bytes(data))
    with pytest.raises(HashMismatch) as info:
        store.read_verified(stored.uri, stored.hash)
    assert (info.value.field, info.value.value) == ("hash", stored.hash)
    with pytest.raises(HashMismatch):
        store.open_verified(stored.uri, stored.hash)


def test_absent_file_is_a_missing_asset(store: ImageStore) -> None:
    stored = store.put(_image())
    stored.path.unlink()
    with pytest.raises(MissingAsset) as info:
        store.read_verified(stored.uri, stored.hash)
    assert info.value.field == "raw_image_uri"


def test_reads_are_confined_to_the_store_root(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(_encoded(_image(), "PNG"))
    digest = xxhash.xxh3_128_hexdigest(outside.read_bytes())
    link = store.root / "ab" / f"{digest}.png"
    link.parent.mkdir()
    link.symlink_to(outside)
    for uri in (outside.as_uri(), link.as_uri(), "file:///etc/hostname", "http://127.0.0.1/a.png",
                f"file://{store.root}/../outside.png"):
        with pytest.raises(DisallowedLocation) as info:
            store.read_verified(uri, digest)
        assert info.value.field == "raw_image_uri"


@pytest.mark.parametrize("bad", ["", "ABCDEF" * 5 + "AB", "0" * 31, "../../etc/passwd", None])
def test_read_with_a_malformed_hash_is_bad_envelope(store: ImageStore, bad: object) -> None:
    stored = store.put(_image())
    with pytest.raises(BadEnvelope) as info:
        store.read_verified(stored.uri, bad)  # type: ignore[arg-type]
    assert info.value.field == "hash"


def test_open_verified_still_applies_the_pixel_cap(tmp_path: Path) -> None:
    writer = ImageStore(tmp_path / "assets", MultimodalConfig())
    stored = writer.put(_image(size=(100, 100)))
    reader = ImageStore(tmp_path / "assets", MultimodalConfig(max_image_pixels=5000))
    with pytest.raises(ImageRejected) as info:
        reader.open_verified(stored.uri, stored.hash)
    assert info.value.field == "image.pixels"


def test_store_from_config_uses_offload_dir_or_run_assets(tmp_path: Path) -> None:
    assert ImageStore.from_config(MultimodalConfig(), tmp_path / "run").root == (tmp_path / "run" / "assets").resolve()
    custom = MultimodalConfig(offload_dir=tmp_path / "shared-assets")
    assert ImageStore.from_config(custom, tmp_path / "run").root == (tmp_path / "shared-assets").resolve()


def test_store_refuses_untrusted_locations_like_any_reader(store: ImageStore) -> None:
    with pytest.raises(DisallowedLocation):
        store.put("/etc/hostname")
    with pytest.raises(DisallowedLocation):
        store.put("http://169.254.169.254/latest/meta-data/")
    assert list(store.root.rglob("*")) == []


def test_stored_image_round_trips_as_a_descriptor_and_is_read_back(store: ImageStore) -> None:
    stored = store.put(_image())
    desc = RawImageDescriptor(
        raw_image_uri=stored.uri,
        hash=stored.hash,
        family="qwen2_vl",
        layout_fingerprint="0123456789abcdef",
        payload={"image_grid_thw": [1, 2, 2], "num_placeholder_tokens": 1},
    )
    decoded = decode_mmraw(encode_mmraw(desc))
    assert store.read_verified(decoded.raw_image_uri, decoded.hash) == stored.path.read_bytes()


def test_store_paths_with_spaces_and_unicode_round_trip_through_the_uri(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "my assets ü", MultimodalConfig())
    stored = store.put(_image())
    assert "%20" in stored.uri
    assert store.read_verified(stored.uri, stored.hash) == stored.path.read_bytes()
    assert os.path.exists(stored.path)


def test_first_sight_stores_full_resolution_and_lays_out_from_the_size_alone(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pixels are resized only where a model consumes them; the renderer needs the size, never a resample."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were resampled on the rendering path")

    for method in ("resize", "thumbnail", "reduce", "draft"):
        monkeypatch.setattr(Image.Image, method, refuse)
    spec = LayoutSpec("qwen2_vl", 14, 2, 2, min_pixels=56 * 56, max_pixels=256 * 28 * 28)
    source = _image(3, (1500, 1000))
    resolved = ImageResolver(store, spec).resolve(_encoded(source, "JPEG"), "images[0]")
    stored = store.open_verified(resolved.descriptor.raw_image_uri, resolved.descriptor.hash)
    assert stored.size == (1500, 1000)
    assert resolved.descriptor.payload == compute_layout(spec, 1500, 1000).payload()
    assert resolved.num_tokens == compute_layout(spec, 1500, 1000).num_placeholder_tokens < 1500 * 1000 // 28**2
