"""Local and inline image locations: roots, traversal, symlinks, schemes, data URLs, size caps."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import DisallowedLocation, ImageRejected, MissingAsset
from foveal.renderers.locations import LocationPolicy, read_location
from foveal.renderers.security.urls import redact_url


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (9, 8, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with an image, a store root, and an outside folder holding a secret."""
    paths = {name: tmp_path / name for name in ("root", "store", "outside")}
    for folder in paths.values():
        folder.mkdir()
    (paths["root"] / "sub").mkdir()
    (paths["root"] / "sub" / "cat.png").write_bytes(PNG)
    (paths["store"] / "kept.png").write_bytes(PNG)
    (paths["outside"] / "secret.png").write_bytes(PNG)
    return paths


def _policy(layout: dict[str, Path], **config: object) -> LocationPolicy:
    cfg = MultimodalConfig(allowed_image_roots=[layout["root"]], **config)  # type: ignore[arg-type]
    return LocationPolicy.from_config(cfg, layout["store"])


def test_bytes_and_pil_images_are_accepted_as_given(layout: dict[str, Path]) -> None:
    image = Image.new("RGB", (1, 1))
    assert read_location(image, _policy(layout)) is image
    assert read_location(bytearray(PNG), _policy(layout)) == PNG


def test_absolute_path_inside_an_allowed_root_is_read(layout: dict[str, Path]) -> None:
    target = layout["root"] / "sub" / "cat.png"
    assert read_location(str(target), _policy(layout)) == PNG
    assert read_location(target, _policy(layout)) == PNG
    assert read_location(target.as_uri(), _policy(layout)) == PNG


def test_store_root_is_always_allowed(layout: dict[str, Path]) -> None:
    policy = LocationPolicy.from_config(MultimodalConfig(), layout["store"])
    assert read_location(str(layout["store"] / "kept.png"), policy) == PNG


@pytest.mark.parametrize("as_uri", [False, True])
def test_file_outside_the_roots_is_disallowed(layout: dict[str, Path], as_uri: bool) -> None:
    secret = layout["outside"] / "secret.png"
    with pytest.raises(DisallowedLocation) as info:
        read_location(secret.as_uri() if as_uri else str(secret), _policy(layout))
    assert info.value.field == "location.path"


@pytest.mark.parametrize(
    "suffix",
    ["sub/../../outside/secret.png", "sub/../sub/cat.png", "../outside/secret.png"],
    ids=["escapes", "stays-inside", "parent"],
)
def test_dotdot_traversal_is_refused_even_when_it_stays_inside(layout: dict[str, Path], suffix: str) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(f"{layout['root']}/{suffix}", _policy(layout))
    assert info.value.field == "location.path"


def test_relative_path_is_refused(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout["root"])
    with pytest.raises(DisallowedLocation) as info:
        read_location("sub/cat.png", _policy(layout))
    assert info.value.field == "location.path"


def test_symlink_to_a_file_outside_the_root_is_refused(layout: dict[str, Path]) -> None:
    link = layout["root"] / "innocent.png"
    link.symlink_to(layout["outside"] / "secret.png")
    with pytest.raises(DisallowedLocation) as info:
        read_location(str(link), _policy(layout))
    assert info.value.field == "location.path"


def test_symlinked_folder_escaping_the_root_is_refused(layout: dict[str, Path]) -> None:
    (layout["root"] / "linked").symlink_to(layout["outside"], target_is_directory=True)
    with pytest.raises(DisallowedLocation):
        read_location(str(layout["root"] / "linked" / "secret.png"), _policy(layout))


def test_symlink_that_stays_inside_the_root_is_followed(layout: dict[str, Path]) -> None:
    link = layout["root"] / "alias.png"
    link.symlink_to(layout["root"] / "sub" / "cat.png")
    assert read_location(str(link), _policy(layout)) == PNG


def test_root_given_through_a_symlink_still_contains_its_files(layout: dict[str, Path], tmp_path: Path) -> None:
    alias = tmp_path / "root-alias"
    alias.symlink_to(layout["root"], target_is_directory=True)
    policy = LocationPolicy.from_config(MultimodalConfig(allowed_image_roots=[alias]), layout["store"])
    assert read_location(str(alias / "sub" / "cat.png"), policy) == PNG


@pytest.mark.parametrize(
    "uri",
    ["file://localhost{root}/sub/cat.png", "file://evil.example{root}/sub/cat.png", "file:{root}/sub/cat.png",
     "file://{root}/sub/%2e%2e/sub/cat.png", "file://{root}/sub/cat.png?x=1"],
    ids=["localhost-host", "remote-host", "no-slashes", "encoded-dotdot", "query"],
)
def test_loose_file_uris_are_refused(layout: dict[str, Path], uri: str) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(uri.format(root=layout["root"]), _policy(layout))
    assert info.value.field == "location"


def test_missing_file_is_a_missing_asset(layout: dict[str, Path]) -> None:
    with pytest.raises(MissingAsset) as info:
        read_location(str(layout["root"] / "nope.png"), _policy(layout))
    assert info.value.field == "location.path"


def test_fifo_and_folder_are_refused_without_blocking(layout: dict[str, Path]) -> None:
    fifo = layout["root"] / "pipe.png"
    os.mkfifo(fifo)
    for target in (fifo, layout["root"] / "sub"):
        with pytest.raises(DisallowedLocation) as info:
            read_location(str(target), _policy(layout))
        assert info.value.field == "location.path"


def test_file_over_the_byte_cap_is_rejected(layout: dict[str, Path]) -> None:
    with pytest.raises(ImageRejected) as info:
        read_location(str(layout["root"] / "sub" / "cat.png"), _policy(layout, max_image_bytes=len(PNG) - 1))
    assert (info.value.field, info.value.value) == ("image.bytes", len(PNG))


def test_paths_need_the_file_scheme(layout: dict[str, Path]) -> None:
    policy = _policy(layout, allowed_url_schemes=["data"])
    for location in (str(layout["root"] / "sub" / "cat.png"), (layout["root"] / "sub" / "cat.png").as_uri()):
        with pytest.raises(DisallowedLocation) as info:
            read_location(location, policy)
        assert info.value.field == "location.scheme"


@pytest.mark.parametrize(
    "location",
    ["ftp://example.com/a.png", "gopher://127.0.0.1:70/", "javascript:alert(1)", "jar:file:///a!/b.png",
     "HTTP://127.0.0.1/a.png", "https://example.com/a.png", "s3://bucket/a.png", "C:/images/a.png"],
)
def test_disallowed_schemes_are_refused_and_http_is_off_by_default(layout: dict[str, Path], location: str) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(location, _policy(layout))
    assert info.value.field == "location.scheme"


def test_unsupported_source_types_are_refused(layout: dict[str, Path]) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(12345, _policy(layout))  # type: ignore[arg-type]
    assert info.value.field == "location"


def test_data_url_with_base64_image_is_decoded(layout: dict[str, Path]) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert read_location(url, _policy(layout)) == PNG


@pytest.mark.parametrize(
    "url",
    [
        "data:text/plain;base64," + base64.b64encode(PNG).decode(),
        "data:image/png," + PNG.hex(),
        "data:image/png;base64",
        "data:image/png;base64,@@@@",
        "data:image/png;base64," + base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),
        "data:image/png;base64,iVBO\u00e9RW0",
    ],
    ids=["not-image", "not-base64", "no-comma", "bad-chars", "urlsafe-alphabet", "non-ascii"],
)
def test_malformed_data_urls_are_refused(layout: dict[str, Path], url: str) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(url, _policy(layout))
    assert info.value.field == "location.data"


def test_data_url_over_the_byte_cap_is_rejected_before_decoding(layout: dict[str, Path]) -> None:
    url = "data:image/png;base64," + "@" * 4000  # invalid base64: only a size check that runs first passes it by
    with pytest.raises(ImageRejected) as info:
        read_location(url, _policy(layout, max_image_bytes=1000))
    assert info.value.field == "image.bytes"


def test_data_urls_can_be_disabled(layout: dict[str, Path]) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with pytest.raises(DisallowedLocation) as info:
        read_location(url, _policy(layout, allowed_url_schemes=["file"]))
    assert info.value.field == "location.scheme"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://alice:s3cret@example.com/a.png", "https://***@example.com/a.png"),
        ("https://example.com/a.png?X-Amz-Signature=s3cret", "https://example.com/a.png?***"),
        ("http://s3cret@[::1]:8080/a", "http://***@[::1]:8080/a"),
        ("http://[::1/a", "<unparseable url>"),
    ],
)
def test_redaction_hides_credentials_and_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown
