"""Content-addressed folders for tiny artifacts: `<cache_root>/<name>-<hash of the recipe>`.

A recipe is the JSON of everything that decides the files (corpus digest, tokens, template source, settings,
library versions, and a digest of the code that writes them), so changing any of it gives a new folder and a
stale one is never reused. A folder is written under a hidden temporary name beside its final place and
renamed in one step: readers never see a partial folder, and when several processes (pytest-xdist workers)
build the same recipe, one rename wins and the others discard their copy. A build killed midway leaves only
its hidden staging folder behind, which nothing reads.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import xxhash

DEFAULT_CACHE_ROOT = Path.home() / ".cache" / "foveal" / "tiny"
RECIPE_FILE = "foveal_recipe.json"


def canonical_json(recipe: Mapping[str, Any]) -> bytes:
    return orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def recipe_digest(recipe: Mapping[str, Any]) -> str:
    """16 hex digits of xxh3-128 over the canonical JSON of the recipe."""
    return xxhash.xxh3_128_hexdigest(canonical_json(recipe))[:16]


def source_digest(*files: str | Path) -> str:
    """Digest of the code that writes an artifact, so editing that code invalidates its cached folders."""
    hasher = xxhash.xxh3_128()
    for path in files:
        hasher.update(Path(path).read_bytes())
    return hasher.hexdigest()[:16]


def materialize(
    name: str, recipe: Mapping[str, Any], write: Callable[[Path], None], cache_root: Path | None = None
) -> Path:
    """The folder for `recipe`, calling `write(folder)` to fill it only when it does not exist yet."""
    root = Path(cache_root) if cache_root is not None else DEFAULT_CACHE_ROOT
    folder = root / f"{name}-{recipe_digest(recipe)}"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        write(staging)
        (staging / RECIPE_FILE).write_bytes(canonical_json(recipe))
        staging.chmod(0o755)
        _rename_or_lose_race(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _rename_or_lose_race(staging: Path, folder: Path) -> None:
    try:
        os.rename(staging, folder)
    except OSError as error:
        # Linux refuses to rename onto a non-empty folder: another process finished the same recipe first.
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not folder.is_dir():
            raise
