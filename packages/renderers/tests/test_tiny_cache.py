"""The tiny cache: same recipe, same folder and bytes; atomic and safe when processes race; torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foveal.renderers.tiny import build_tiny_processor, family_spec, materialize, recipe_digest
from foveal.renderers.tiny.bpe import BPE_VOCAB_SIZE
from foveal.renderers.tiny.cache import RECIPE_FILE


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_same_recipe_reuses_the_folder_without_rewriting_it(tiny_processor_dir, tiny_cache_root):
    folder = tiny_processor_dir("qwen2_vl")
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert build_tiny_processor("qwen2_vl", tiny_cache_root) == folder
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp
    recipe = json.loads((folder / RECIPE_FILE).read_text())
    assert folder.name == f"qwen2_vl-{recipe_digest(recipe)}"


def test_families_get_distinct_folders(tiny_processor_dir):
    names = {tiny_processor_dir(family).name for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3", "llama3")}
    assert len(names) == 5


def test_a_changed_recipe_gets_a_new_folder(tmp_path):
    def write(folder: Path) -> None:
        (folder / "data.txt").write_text("x")

    first = materialize("demo", {"value": 1}, write, tmp_path)
    second = materialize("demo", {"value": 2}, write, tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def write(folder: Path) -> None:
        (folder / "half.txt").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        materialize("demo", {"value": 1}, write, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_losing_the_rename_race_returns_the_winners_folder(tmp_path):
    recipe = {"value": 1}
    final = tmp_path / f"demo-{recipe_digest(recipe)}"

    def write(folder: Path) -> None:
        (folder / "data.txt").write_text("loser")
        final.mkdir()  # another process finishes first, while this one is still writing
        (final / "data.txt").write_text("winner")

    assert materialize("demo", recipe, write, tmp_path) == final
    assert (final / "data.txt").read_text() == "winner"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_concurrent_builds_end_with_one_identical_folder(tmp_path, tiny_processor_dir):
    root = tmp_path / "shared"
    start_at = time.time() + 1.5  # both workers import first, then build at the same moment
    code = f"""
        import time
        from foveal.renderers.tiny import build_tiny_processor
        time.sleep(max(0.0, {start_at} - time.time()))
        print(build_tiny_processor("qwen2_5_vl", {str(root)!r}))
    """
    command = [sys.executable, "-c", textwrap.dedent(code)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    folders = list(root.iterdir())  # no second folder, no leftover staging folder
    assert len(folders) == 1 and outputs == [str(folders[0])] * 2
    # Built in other processes, byte-identical to this process's build: training and writing are deterministic.
    assert folder_bytes(folders[0]) == folder_bytes(tiny_processor_dir("qwen2_5_vl"))


def test_renderers_tiny_imports_and_works_without_torch(tmp_path):
    result = run_python(
        f"""
        import sys
        import foveal.renderers.tiny
        assert "torch" not in sys.modules and "torchvision" not in sys.modules, "import pulled in torch"
        sys.modules["torch"] = sys.modules["torchvision"] = None  # from here on, as if not installed
        from PIL import Image
        from transformers import AutoImageProcessor, AutoTokenizer
        folder = foveal.renderers.tiny.build_tiny_processor("qwen3_vl", {str(tmp_path)!r})
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = AutoImageProcessor.from_pretrained(folder)
        grid = image_processor(images=[Image.new("RGB", (224, 224))])["image_grid_thw"][0]
        print(type(image_processor).__name__, len(tokenizer), tokenizer.eos_token, *grid.tolist())
        """
    )
    assert result.returncode == 0, result.stderr
    vocab_size = BPE_VOCAB_SIZE + len(family_spec("qwen3_vl").added_tokens)
    assert result.stdout.split() == ["Qwen2VLImageProcessorPil", str(vocab_size), "<|im_end|>", "1", "14", "14"]
