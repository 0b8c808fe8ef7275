"""`write_atomic`, durable or not (failed writes are covered through the image store in test_store)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from foveal.renderers.atomic_files import write_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_creates_the_folder_replaces_the_old_bytes_and_leaves_no_temporary(
    tmp_path: Path, durable: bool
) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    assert write_atomic(target, b"first", durable=durable) == target
    assert write_atomic(target, b"second", durable=durable) == target
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by a server running as another user

