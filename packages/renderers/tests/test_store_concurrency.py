"""Four processes put the same and different images at once: every file that ever appears is complete and
verifies, results agree, and no temporary file is left behind.

The workers come from a `forkserver` that imported the store once: like `spawn`, they share nothing with
the pytest process, but they start in milliseconds instead of re-importing pydantic and Pillow four times.
"""

from __future__ import annotations

import io
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import xxhash
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.store import ImageStore, StoredImage

WORKERS = 4


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _verify_visible_files(root: Path) -> int:
    """Every final-named file a reader can see must be whole: its bytes hash to its name."""
    checked = 0
    for path in root.glob("*/*.png"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        assert xxhash.xxh3_128_hexdigest(data) == path.stem, f"partial or foreign file visible: {path}"
        checked += 1
    return checked


def test_concurrent_writers_in_four_processes_leave_only_whole_verified_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "assets", MultimodalConfig())
    shared = [_png(seed) for seed in range(6)]
    unique = [_png(100 + seed) for seed in range(8)]
    tasks = [data for data in shared for _ in range(WORKERS)] + unique  # each shared image 4 times in a row
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["foveal.renderers.store"])
    start_together = context.Barrier(WORKERS, timeout=60)
    with ProcessPoolExecutor(WORKERS, mp_context=context, initializer=start_together.wait) as pool:
        futures: list[Future[StoredImage]] = [pool.submit(store.put, data) for data in tasks]
        while not all(future.done() for future in futures):
            _verify_visible_files(store.root)
            time.sleep(0.02)
        results = [future.result() for future in futures]

    for index, data in enumerate(shared):
        same = {(r.hash, r.uri) for r in results[index * WORKERS : (index + 1) * WORKERS]}
        assert len(same) == 1, "writers of one image disagree"
    distinct = {r.hash for r in results}
    assert len(distinct) == len(shared) + len(unique)
    assert _verify_visible_files(store.root) == len(distinct)
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == sorted(f"{h}.png" for h in distinct)
    for result in results:
        assert store.read_verified(result.uri, result.hash) == result.path.read_bytes()
