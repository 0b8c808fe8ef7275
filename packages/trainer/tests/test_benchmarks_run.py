"""The trainer benchmarks (benchmarks/trainer/) run end to end at toy sizes and write sane results.

Timings are not checked (they belong to the machine); the schema, the bounds every figure must respect,
and the invariants that make each comparison fair (same samples in every mode) are.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks" / "trainer"
TOP_LEVEL_KEYS = {"schema", "benchmark", "command", "environment", "settings", "summary"}


def load(name: str) -> ModuleType:
    """Import a benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"foveal_benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


def result(main: Callable[..., Path], argv: list[str], out: Path, **options: Any) -> dict[str, Any]:
    path = main([*argv, "--out", str(out)], **options)
    assert path == out
    document = json.loads(out.read_text(encoding="utf-8"))
    assert TOP_LEVEL_KEYS <= set(document)
    assert document["command"].startswith("python benchmarks/trainer/")
    assert "baseline" in document["summary"]
    return document


def test_packing_beats_padded_batching_and_every_efficiency_is_a_fraction(tmp_path: Path) -> None:
    bench = load("bench_packing")
    argv = ["--samples", "512", "--seq-lens", "8192", "16384", "--step-samples", "64", "256"]
    document = result(bench.main, argv, tmp_path / "packing.json")
    assert document["benchmark"] == "packing" and len(document["rows"]) == 4
    mix = document["mix"]
    assert 64 <= mix["tokens_min"] <= mix["tokens_max"] <= 4096 and 0 < mix["multimodal_share"] < 1
    for row in document["rows"]:
        for key in ("packed_efficiency", "padded_efficiency", "padded_sorted_efficiency"):
            assert 0 < row[key] <= 1
        assert row["packed_passes_per_step"] < row["padded_passes_per_step"]
        assert row["packed_vs_padded"] == pytest.approx(row["packed_efficiency"] / row["padded_efficiency"])
    assert isinstance(document["summary"]["meets_target"], bool)


def test_wire_bytes_of_refs_are_far_below_the_pixel_tensors(tmp_path: Path, tiny_cache_root: Path) -> None:
    bench = load("bench_wire_bytes")
    document = result(bench.main, ["--sizes", "64x48", "300x200"], tmp_path / "wire.json", cache_root=tiny_cache_root)
    rows = document["rows"]
    assert len(rows) == 2 * len(bench.BOUNDS)
    for row in rows:
        t, h, w = row["image_grid_thw"]
        assert row["placeholder_tokens"] == t * h * w // 4
        assert row["pixel_values_fp32_bytes"] == t * h * w * 3 * 2 * 14 * 14 * 4
        assert 0 < row["mm_ref_msgpack_bytes"] < row["sft_msgpack_bytes"] < row["rl_msgpack_bytes"]
        assert row["sft_json_bytes"] > 0 and row["png_bytes"] > 0
        assert row["fp32_tensors_vs_refs"] > row["bf16_tensors_vs_refs"] > 1


def test_materialize_measures_rates_and_blocked_shares(tmp_path: Path, tiny_cache_root: Path) -> None:
    bench = load("bench_materialize")
    argv = ["--images", "4", "--batch-size", "2", "--sides", "64", "160", "--sim-tokens-per-s", "1e6",
            "--threads", "2", "--stream-threads", "2"]  # fmt: skip
    document = result(bench.main, argv, tmp_path / "materialize.json", cache_root=tiny_cache_root)
    assert [row["images"] for row in document["rates"]] == [4, 4, 4]
    assert [row["threads"] for row in document["rates"]] == [1, 1, 2]
    assert all(row["images_per_s"] > 0 and row["cpu_per_wall"] > 0 for row in document["rates"])
    loops = document["loops"]
    modes = {"inline (baseline)", "StepStream, 1 thread", "StepStream, 2 threads"}
    assert len(loops) == 6 and {row["data"] for row in loops} == modes
    tokens = {row["tokens"] for row in loops}
    assert len(tokens) == 1 and tokens.pop() > 0  # every run trains on the same samples
    for row in loops:
        assert row["steps"] == 2
        assert 0 <= row["blocked_share_steady"] <= 1 and 0 < row["blocked_share_all"] <= 1


def test_gpu_sft_tiny_runs_every_mode_on_the_same_samples_on_cpu(tmp_path: Path) -> None:
    bench = load("bench_gpu_sft")
    argv = ["--tiny", "--warmup", "0", "--steps", "1", "--varlen-budgets", "1024", "--flex-budgets", "1024"]
    argv += ["--variants", "varlen:1024:ckpt0", "varlen:1024:ckpt2:rl"]
    document = result(bench.main, argv, tmp_path / "gpu.json")
    assert document["complete"] is True
    *rows, no_checkpointing, rl = document["rows"]
    assert no_checkpointing["mode"] == "packed varlen (1024 tokens/row, ckpt 0)"
    assert rl["mode"] == "packed varlen (1024 tokens/row, ckpt 2, RL loss)"
    assert no_checkpointing["loss_first"] == pytest.approx(rows[0]["loss_first"], rel=1e-3)
    for row in (no_checkpointing, rl):
        assert row["useful_tokens"] == rows[0]["useful_tokens"] and row["model_flops_per_s"] > 0
        assert row["first_step_s"] > 0 and row["mfu_model_flops"] is None
    modes = [
        "padded (batch 4)",
        "packed sdpa (1024 tokens/row)",
        "packed sdpa (256 tokens/row)",
        "packed varlen (1024 tokens/row)",
    ]
    assert [row["mode"] for row in rows] == [*modes, "packed flex (1024 tokens/row)"]
    assert len({row["useful_tokens"] for row in rows}) == 1
    padded, *packed, flex = rows
    assert 0 < padded["token_efficiency"] < 1 and all(row["token_efficiency"] == 1 for row in [*packed, flex])
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["mfu_spec"] is None and row["peak_memory_gib"] is None
        assert math.isfinite(row["loss_first"])
        # Same samples, same objective; weights moved by one lr=1e-5 step per earlier mode at most.
        assert row["loss_first"] == pytest.approx(padded["loss_first"], rel=1e-3)
    assert packed[1]["micro_batches_per_step"] > packed[0]["micro_batches_per_step"] == 1
    # Flex has no backward on CPU: its row is forward and loss only, and no training rate is compared.
    assert [row["backward"] for row in rows] == [True, True, True, True, False] and flex["vs_padded"] is None


def test_model_flops_count_parameters_per_token_and_patch_plus_attention() -> None:
    bench = load("bench_gpu_sft")
    shape = bench.REAL
    dense = bench.FlopCounts(3_000, 600, 0, 0, 0, 28, 4)
    assert bench.model_flops(shape, dense, 2048) == 6 * 3_000 * 2048 + 6 * 600 * 1024  # 32 x 32 patches
    text = bench.FlopCounts(0, 0, 36, 2048, 0, 28, 4)
    assert bench.model_flops(shape, text, 1000) == 36 * 6 * 1000**2 * 2048  # causal QK^T and AV, x3 for backward
    vision = bench.FlopCounts(0, 0, 0, 0, 1280, 28, 4)
    windows = 16 * 64**2  # 112 px windows: 8 x 8 patches, 4 x 4 of them per 32 x 32-patch image
    assert bench.model_flops(shape, vision, 1) == 12 * 1280 * (28 * windows + 4 * 1024**2)


def test_gpu_sft_e2e_runs_foveal_sft_on_png_files_and_reads_its_metrics(tmp_path: Path) -> None:
    bench = load("bench_gpu_sft_e2e")
    argv = ["--tiny", "--steps", "2", "--warmup", "1", "--work", str(tmp_path / "work")]
    path = bench.main([*argv, "--out", str(tmp_path / "e2e.json")])
    document = json.loads(path.read_text(encoding="utf-8"))
    (row,) = document["rows"]
    assert row["steps_measured"] == 1 and len(row["steps"]) == 2 and row["tokens_per_s"] > 0
    assert row["images_per_step"] == bench.SAMPLES_PER_STEP and 0 <= row["data_wait_share"] < 1
    assert len(list((tmp_path / "work" / "data" / "images").glob("*.png"))) == 2 * bench.SAMPLES_PER_STEP
