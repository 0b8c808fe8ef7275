"""Publish a file so that a reader in another process sees either no file or the whole of it.

The bytes go to a temporary name in the target folder (same filesystem, so the rename is atomic) and
`os.replace` gives them their final name. Durable writes also fsync the bytes and then the folder, so after a
crash the name never points at bytes that did not reach the disk. Temporary names start with a dot and end in
`.tmp`, so a reader globbing for final names never matches one. The one writer of the image store, the
trainer's run files (rollout batches, progress, run metadata) and the verifiers' results, reports and datasets.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically (creating the folder), and durably unless told not to; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes 0600; another process may run as another user
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
