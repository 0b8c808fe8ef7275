"""The renderers benchmark (benchmarks/renderers/bench_render.py) still runs and reports what it claims.

A smoke run on a few small conversations through the real CLI entry point: the JSON it writes has every
pass and kind, both paths produced the same token ids, and the byte counts are sane. Timings are only
checked to be measured (positive), never compared: speed is the benchmark's business, not a test's.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import orjson
import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "renderers"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    pytest.importorskip("torch", reason="the HF baseline loads AutoProcessor, whose video processor needs torch")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH_DIR))
        return importlib.import_module("bench_render")


def test_quick_run_writes_a_complete_sane_report(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--n", "6", "--seed", "3", "--out", str(out)]) == 0
    report = orjson.loads(out.read_bytes())

    workload = report["workload"]
    assert workload["conversations"] == 6
    assert workload["image_conversations"] > 0 and workload["text_conversations"] > 0
    assert workload["images"] == workload["photo_jpeg"] + workload["screenshot_png"]
    rows = {(row["pass"], row["kind"]): row for row in report["passes"]}
    assert set(rows) == {(name, kind) for name in bench.PASSES for kind in ("image", "text")}
    for (name, kind), row in rows.items():
        expected = workload["image_conversations" if kind == "image" else "text_conversations"]
        assert row["conversations"] == expected, (name, kind)
        assert row["ours_samples_per_s"] > 0 and row["hf_samples_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["ours_samples_per_s"] / row["hf_samples_per_s"])
    assert sum(row["images"] for row in report["passes"] if row["pass"] == "first_sight") == workload["images"]

    assert report["parity"] == {"checked": 3 * 6, "mismatches": 0}
    sizes = report["bytes_per_image"]
    assert sizes["descriptor_json"]["count"] == workload["images"]
    assert 0 < sizes["descriptor_json"]["max"] <= bench.DESCRIPTOR_TARGET_BYTES
    assert sizes["mmraw_ref"]["max"] > sizes["descriptor_json"]["max"]  # base64 of the same JSON
    assert sizes["hf_pixel_values"]["mean"] > 100 * sizes["descriptor_json"]["mean"]
    assert report["targets"]["descriptor_bytes_per_image"]["met"] is True
    assert report["first_sight_breakdown"]["images"] == workload["images"]
    assert report["command"].endswith("--quick --n 6 --seed 3 --out " + str(out))

    printed = capsys.readouterr().out
    assert all(name in printed for name in bench.PASSES)
    assert str(out) in printed
