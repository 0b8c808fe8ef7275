"""`benchmarks/trainer/bench_dflash.py --tiny` runs end to end on CPU and writes a well-formed result."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[4] / "benchmarks" / "trainer" / "bench_dflash.py"


def test_the_tiny_dflash_benchmark_reports_throughput_and_acceptance(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("foveal_benchmark_bench_dflash", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "dflash.json"
    assert module.main(["--tiny", "--out", str(out)]) == out
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["benchmark"] == "dflash" and document["command"].startswith("python benchmarks/trainer/")
    assert document["training"]["tokens_per_s"] > 0 and "baseline" in document["summary"]
    assert document["settings"]["draft"]["block_size"] == 16
    generation = document["generation"]
    assert generation["prompts"] == generation["batch"] == 8 and generation["batched_s"] > 0
    assert generation["speedup"] == generation["one_at_a_time_s"] / generation["batched_s"]
    for row in document["rows"]:
        assert 1.0 <= row["acceptance_length"] <= 16 and row["speedup"] >= 1.0
        assert row["samples"] == 2 and row["target_forwards"] <= row["generated"]
